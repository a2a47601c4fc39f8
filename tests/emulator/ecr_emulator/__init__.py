"""A local Amazon ECR that behaves like ECR where ecr-remediator depends on it.

Built on moto's server (pinned in ``tests/emulator/requirements.txt``): ECR is
implemented here (:mod:`ecr_emulator.registry`), every other AWS service is
moto's. See ``tests/emulator/README.md``.
"""

__version__ = "0.1.0"
