"""The shared kernel: what every service may use and nothing else owns.

Names and their rules (``names``), roles and permissions (``roles``, ``permissions``), the
replicated-team contract (``replica``), and the API's common pieces (``api``: the problem
document, pagination, strict fields; ``openapi``: the documented errors). It sits above the
bus (``events``) and below the services: a service may import it, it imports no service.
"""
