"""``moto_server`` that enforces IAM policies on the resources AWS evaluates them against.

    python -m devtools.moto_iam -H 127.0.0.1 -p PORT     # with INITIAL_NO_AUTH_ACTION_COUNT=N

moto checks every request's signature and its caller's identity policies once
``INITIAL_NO_AUTH_ACTION_COUNT`` requests have passed (its own switch, read from the
environment), but it matches SNS requests, and SQS's ``CreateQueue`` and ``GetQueueUrl``, to
the resource ``*``: a statement scoped to a topic or queue ARN, as least privilege writes them,
would never match. AWS authorises these calls against the topic's ARN (a subscription's for
the subscription calls) and the queue's ARN; and a batch call against its single action
(``PublishBatch`` needs ``sns:Publish``, ``SendMessageBatch`` ``sqs:SendMessage`` ...), where
moto asks for ``sns:PublishBatch``. This launcher gives moto exactly those ARNs and actions
and changes nothing else, so the generated policies (``events/iam.py``) are enforced as AWS
enforces them: ``publish`` to a topic not in the caller's policy is ``AuthorizationError``,
a queue call outside it ``AccessDenied``.
"""

from __future__ import annotations

import sys
from typing import Any

# The parameter that names the resource of each SNS operation (ListTopics has none: "*").
_SNS_TOPIC = {
    "Publish",
    "PublishBatch",
    "Subscribe",
    "ListSubscriptionsByTopic",
    "GetTopicAttributes",
    "SetTopicAttributes",
    "DeleteTopic",
}
_SNS_SUBSCRIPTION = {"Unsubscribe", "GetSubscriptionAttributes", "SetSubscriptionAttributes"}


def _sns_resource(self: Any) -> str:
    action = self._get_action()
    if action in _SNS_TOPIC:
        return self._get_param("TopicArn") or "*"
    if action in _SNS_SUBSCRIPTION:
        return self._get_param("SubscriptionArn") or "*"
    if action == "CreateTopic":
        return f"arn:{self.partition}:sns:{self.region}:{self.current_account}:{self._get_param('Name')}"
    return "*"


# The IAM action AWS checks for a batch operation.
BATCH_ACTIONS = {
    "sns:PublishBatch": "sns:Publish",
    "sqs:SendMessageBatch": "sqs:SendMessage",
    "sqs:DeleteMessageBatch": "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility",
}


def install() -> None:
    """Give moto's SNS and SQS handlers the resource, and batch calls the action, each
    request is authorised against."""
    from moto.iam.access_control import IAMRequestBase
    from moto.sns.responses import SNSResponse
    from moto.sqs.responses import SQSResponse

    check = IAMRequestBase.check_action_permitted

    def check_action_permitted(self: Any, resource: str) -> None:
        self._action = BATCH_ACTIONS.get(self._action, self._action)
        check(self, resource)

    IAMRequestBase.check_action_permitted = check_action_permitted  # type: ignore[method-assign]

    queue_resource = SQSResponse._determine_resource

    def _sqs_resource(self: Any) -> str:
        name = self._get_param("QueueName")
        if name and self._get_action() in ("CreateQueue", "GetQueueUrl"):
            return f"arn:{self.partition}:sqs:{self.region}:{self.current_account}:{name}"
        return queue_resource(self)

    SNSResponse._determine_resource = _sns_resource  # type: ignore[attr-defined]
    SQSResponse._determine_resource = _sqs_resource  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> None:
    install()
    from moto.server import main as moto_main

    moto_main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
