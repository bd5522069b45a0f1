"""SQLAlchemy models of the work tracker (Story 2.1). `Base.metadata` is the target of
autogenerate; migrations never import these modules (they stay frozen)."""

from db.models.audit import AuditEvent
from db.models.base import NAMING_CONVENTION, Base
from db.models.organizations import Organization, OrganizationMember
from db.models.projects import Label, Project
from db.models.users import User
from db.models.work_items import Comment, Task, TaskLabel, TaskStatus

metadata = Base.metadata

__all__ = [
    "NAMING_CONVENTION",
    "AuditEvent",
    "Base",
    "Comment",
    "Label",
    "Organization",
    "OrganizationMember",
    "Project",
    "Task",
    "TaskLabel",
    "TaskStatus",
    "User",
    "metadata",
]
