"""``python manage.py loupe_admin``: make sure an admin account exists and print how to log in.

An existing user's password is never changed: the command says so and prints no password.
"""
from __future__ import annotations

from django.core.management.base import BaseCommand

from annotate.services.roles import admin_user_ensure


class Command(BaseCommand):
    help = "Create a superuser (random password, printed once) unless it exists."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")
        parser.add_argument("--password", default=None, help="default: a random one")
        parser.add_argument("--email", default="admin@example.com")

    def handle(self, *args, **opts):
        password = admin_user_ensure(username=opts["username"], email=opts["email"], password=opts["password"])
        if password is None:
            self.stdout.write(f"admin user {opts['username']!r} exists; its password is unchanged")
            return
        self.stdout.write(self.style.SUCCESS(
            f"created admin user\n    username: {opts['username']}\n    password: {password}"
        ))
