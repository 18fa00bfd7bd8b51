"""Schedules get real fields for exclusions, ports and webhook secrets.

Until now they were packed into the JSON lists in command-line form: ``targets`` held the
targets followed by ``--exclude=X`` and ``--ports=P`` items, ``webhooks`` held ``URL
--secret-env=VAR`` strings. The upgrade unpacks existing rows into ``excludes``, ``ports`` and
webhook objects ``{"url", "secret_env"}``; the downgrade packs them back. The parsing lives here,
frozen with the revision, because the code that wrote the packed form is gone.

Revision ID: 0003
Revises: 0002
Create Date: 2025-01-01
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_EXCLUDE, _PORTS, _SECRET = "--exclude=", "--ports=", "--secret-env="

_schedules = sa.table("schedules", sa.column("id", sa.Integer()),
                      sa.column("targets", sa.JSON()), sa.column("excludes", sa.JSON()),
                      sa.column("ports", sa.Text()), sa.column("webhooks", sa.JSON()))


def unpacked(targets: list[str], webhooks: list[str]) -> dict[str, Any]:
    """A packed row's new field values (the first ``--ports=`` item wins, as it did)."""
    ports = [item.removeprefix(_PORTS) for item in targets if item.startswith(_PORTS)]
    hooks = []
    for text in webhooks:
        url, _, option = text.partition(" ")
        # A packed webhook always named its secret variable; one that did not could never be
        # sent, and keeps an empty name, refused when it is next used.
        hooks.append({"url": url, "secret_env": option.removeprefix(_SECRET)
                      if option.startswith(_SECRET) else ""})
    return {"targets": [item for item in targets if not item.startswith("--")],
            "excludes": [item.removeprefix(_EXCLUDE) for item in targets
                         if item.startswith(_EXCLUDE)],
            "ports": ports[0] if ports else None, "webhooks": hooks}


def packed(targets: list[str], excludes: list[str], ports: str | None,
           webhooks: list[dict[str, str]]) -> dict[str, Any]:
    return {"targets": [*targets, *(_EXCLUDE + item for item in excludes),
                        *([_PORTS + ports] if ports else [])],
            "webhooks": [f"{hook['url']} {_SECRET}{hook['secret_env']}"
                         if hook.get("secret_env") else hook["url"] for hook in webhooks]}


def upgrade() -> None:
    # Plain ALTER TABLE on SQLite too, never a batch copy: dropping the old ``schedules`` table
    # would fire ``scans.schedule_id``'s ON DELETE SET NULL and cut every scan off its schedule.
    op.add_column("schedules", sa.Column("excludes", sa.JSON(), nullable=False,
                                         server_default="[]"))
    op.add_column("schedules", sa.Column("ports", sa.Text(), nullable=True))
    connection = op.get_bind()
    rows = connection.execute(sa.select(_schedules.c.id, _schedules.c.targets,
                                        _schedules.c.webhooks)).all()
    for schedule_id, targets, webhooks in rows:
        connection.execute(sa.update(_schedules).where(_schedules.c.id == schedule_id)
                           .values(**unpacked(list(targets or []), list(webhooks or []))))


def downgrade() -> None:
    connection = op.get_bind()
    rows = connection.execute(sa.select(_schedules.c.id, _schedules.c.targets,
                                        _schedules.c.excludes, _schedules.c.ports,
                                        _schedules.c.webhooks)).all()
    for schedule_id, targets, excludes, ports, webhooks in rows:
        connection.execute(sa.update(_schedules).where(_schedules.c.id == schedule_id)
                           .values(**packed(list(targets or []), list(excludes or []), ports,
                                            list(webhooks or []))))
    op.drop_column("schedules", "ports")  # SQLite 3.35+ drops a column in place
    op.drop_column("schedules", "excludes")
