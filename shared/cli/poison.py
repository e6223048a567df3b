"""``poison``: what is in the poison queue and why, and putting messages back on the alerts queue."""

from __future__ import annotations

import click

from shared.alerting import poison as poison_queue
from shared.cli.context import CommandError, Operator, pass_operator


@click.group()
def poison() -> None:
    """The poison queue: messages that could not be forwarded, with the reason."""


@poison.command(name="list")
@pass_operator
def list_poison(operator: Operator) -> int:
    """Every poison message: its id, when it was poisoned, which alert it is, and why."""
    queue = operator.queues().get_queue_client(poison_queue.poison_queue_name(operator.settings.alerts_queue))
    messages = list(poison_queue.receive_all(queue))
    try:
        for message in messages:
            entry = poison_queue.PoisonEntry.decode(message.content)
            click.echo(f"{message.id}  {poison_queue.inserted(message)}  {entry.alert}\n    {entry.reason}")
    finally:
        poison_queue.release(queue, messages)
    click.echo(f"{len(messages)} message(s) in '{queue.queue_name}'")
    return 0


@poison.command()
@click.argument("ids", nargs=-1)
@click.option("--all", "replay_all", is_flag=True, help="every message in the poison queue")
@pass_operator
def replay(operator: Operator, ids: tuple[str, ...], replay_all: bool) -> int:
    """Put poison messages (by id, as `poison list` shows them, or --all) back on the alerts queue, with a
    fresh age and no attempt history."""
    if not ids and not replay_all:
        raise click.UsageError("name the messages to replay (ids from `poison list`), or give --all")
    if ids and replay_all:
        raise click.UsageError("give ids or --all, not both")
    service = operator.queues()
    queue = service.get_queue_client(poison_queue.poison_queue_name(operator.settings.alerts_queue))
    alerts = service.get_queue_client(operator.settings.alerts_queue)
    wanted = set(ids)
    kept, replayed = [], 0
    try:
        for message in poison_queue.receive_all(queue):
            if replay_all or message.id in wanted:
                poison_queue.replay(queue, alerts, message)
                wanted.discard(message.id)
                replayed += 1
            else:
                kept.append(message)
    finally:
        poison_queue.release(queue, kept)
    click.echo(f"replayed {replayed} message(s) onto '{operator.settings.alerts_queue}'")
    if wanted:
        raise CommandError(f"not in '{queue.queue_name}': {', '.join(sorted(wanted))}")
    return 0
