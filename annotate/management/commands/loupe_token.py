"""``python manage.py loupe_token``: create, list and revoke API tokens.

    manage.py loupe_token alice [--name laptop] [--quiet]   # a new key for alice, shown once
    manage.py loupe_token --list [alice]                     # prefixes, names, last use, state
    manage.py loupe_token --revoke 1a2b3c4d                  # revoke by prefix (or --revoke-user alice)
"""
from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from annotate.models import ApiToken
from annotate.services.tokens import token_create, token_revoke


class Command(BaseCommand):
    help = "Create an API token for a user (Authorization: Token <key>), or list and revoke tokens."

    def add_arguments(self, parser):
        parser.add_argument("username", nargs="?")
        parser.add_argument("--name", default="", help="a note to tell tokens apart")
        parser.add_argument("--quiet", action="store_true", help="print only the key")
        parser.add_argument("--list", action="store_true", help="list tokens (of USERNAME, or all)")
        parser.add_argument("--revoke", metavar="PREFIX", help="revoke the token whose key starts with PREFIX")
        parser.add_argument("--revoke-user", metavar="USERNAME", help="revoke every token of USERNAME")

    def handle(self, *args, **opts):
        if opts["list"]:
            return self._list(opts["username"])
        if opts["revoke"] or opts["revoke_user"]:
            return self._revoke(opts["revoke"], opts["revoke_user"])
        if not opts["username"]:
            raise CommandError("give a username to create a token for, or --list / --revoke PREFIX")
        user = self._user(opts["username"])
        _, key = token_create(user=user, name=opts["name"])
        if opts["quiet"]:
            self.stdout.write(key)
        else:
            self.stdout.write(f"token for {user.username}: {key}\nuse it as the header  Authorization: Token {key}")

    def _user(self, username: str):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user named {username!r}")
        return user

    def _list(self, username: str | None) -> None:
        tokens = ApiToken.objects.select_related("user").order_by("user__username", "created_at")
        if username:
            tokens = tokens.filter(user=self._user(username))
        for t in tokens:
            used = t.last_used_at.isoformat(timespec="seconds") if t.last_used_at else "never"
            state = "revoked" if t.revoked else "active"
            self.stdout.write(f"{t.prefix}  {t.user.username:<20} {state:<8} last used {used:<25} {t.name}")

    def _revoke(self, prefix: str | None, username: str | None) -> None:
        if prefix is not None:
            if len(prefix) < 4:
                raise CommandError("give at least 4 characters of the key's prefix")
            tokens = ApiToken.objects.filter(prefix__startswith=prefix[:8])
            if tokens.count() > 1:
                raise CommandError(f"prefix {prefix!r} matches {tokens.count()} tokens; give more characters")
            if not tokens.exists():
                raise CommandError(f"no token with prefix {prefix!r}")
        else:
            tokens = ApiToken.objects.filter(user=self._user(username))
        self.stdout.write(f"revoked {token_revoke(tokens=tokens)} token(s)")
