"""Who may do what in the API: Django model permissions, granted through roles (groups,
see kernel/roles.py), the same permissions the admin checks.

Guarantee of ``RolePermissions`` (the default permission class of every API view):

- reads (GET, HEAD, OPTIONS) are public, unless the view names ``read_permissions``
  (``GET /api/teams/export/``, a service-to-service read that needs a token);
- a method the view does not serve is a 405 for everyone (never a 401 or 403 first);
- a write without credentials is a 401;
- a write needs the model permission of its method on the view's model (POST ``add``,
  PUT/PATCH ``change``, DELETE ``delete``; DRF's ``DjangoModelPermissions`` map), or the
  permissions the view lists for that method in ``required_permissions``; the model is
  ``permission_model``, else the view's queryset's model;
- a missing permission is a 403 (``PermissionDenied``) whose message names the
  permission and the roles that grant it.

A view without a model and without ``required_permissions`` only needs a login for
writes (none exists today: every view that writes names its model).
"""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions
from rest_framework.permissions import SAFE_METHODS, DjangoModelPermissions
from rest_framework.request import Request

from kernel import roles


class RolePermissions(DjangoModelPermissions):
    def has_permission(self, request: Request, view: Any) -> bool:
        needed = self._needed(request, view)
        if needed is None:
            return True
        user = request.user
        if not user or not user.is_authenticated:
            return False  # DRF answers 401 with the authentication header
        missing = [perm for perm in needed if not user.has_perm(perm)]
        if missing:
            raise exceptions.PermissionDenied(detail=missing_permission_message(missing))
        return True

    def has_object_permission(self, request: Request, view: Any, obj: Any) -> bool:
        return True  # model permissions only: no per-object rules in this API

    def _needed(self, request: Request, view: Any) -> list[str] | None:
        """The permissions the request needs; ``None``: none, not even a login."""
        method = request.method or "GET"
        if method not in getattr(view, "allowed_methods", (method,)):
            return None  # the view answers 405 to anyone: no method exists for a login to unlock
        if method in SAFE_METHODS:
            return list(getattr(view, "read_permissions", ())) or None
        explicit = getattr(view, "required_permissions", {})
        if method in explicit:
            return list(explicit[method])
        model = getattr(view, "permission_model", None) or _queryset_model(view)
        if model is None:
            return []  # a login only
        return self.get_required_permissions(method, model)


def _queryset_model(view: Any) -> Any:
    queryset = getattr(view, "queryset", None)
    return queryset.model if queryset is not None else None


def missing_permission_message(missing: list[str]) -> str:
    """'You need the permission teams.add_team, which the role League staff grants. Ask
    an administrator to give you that role.'"""
    parts = []
    for perm in missing:
        granting = roles.roles_granting(perm)
        if len(granting) == 1:
            parts.append(f"{perm}, which the role {granting[0]} grants")
        elif granting:
            parts.append(f"{perm}, which the roles {' and '.join(granting)} grant")
        else:
            parts.append(f"{perm} (no role grants it; only a superuser has it)")
    noun = "permission" if len(parts) == 1 else "permissions"
    return f"You need the {noun} {'; '.join(parts)}. Ask an administrator to give you that role."
