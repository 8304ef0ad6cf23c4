"""``python manage.py loupe_token <username>``: create an API token and print its key (shown once)."""
from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from annotate.services.tokens import token_create


class Command(BaseCommand):
    help = "Create an API token for a user (Authorization: Token <key>)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="a note to tell tokens apart")
        parser.add_argument("--quiet", action="store_true", help="print only the key")

    def handle(self, *args, **opts):
        user = get_user_model().objects.filter(username=opts["username"]).first()
        if user is None:
            raise CommandError(f"no user named {opts['username']!r}")
        _, key = token_create(user=user, name=opts["name"])
        if opts["quiet"]:
            self.stdout.write(key)
        else:
            self.stdout.write(f"token for {user.username}: {key}\nuse it as the header  Authorization: Token {key}")
