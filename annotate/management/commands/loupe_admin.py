"""``python manage.py loupe_admin``: make sure an admin account exists and print how to log in.

An existing user's password is never changed: the command says so and prints no password.
"""
from __future__ import annotations

import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create a superuser (random password, printed once) unless it exists."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")
        parser.add_argument("--password", default=None, help="default: a random one")
        parser.add_argument("--email", default="admin@example.com")

    def handle(self, *args, **opts):
        User = get_user_model()
        user = User.objects.filter(username=opts["username"]).first()
        if user is not None:
            self.stdout.write(f"admin user {user.username!r} exists; its password is unchanged")
            return
        password = opts["password"] or secrets.token_urlsafe(12)
        User.objects.create_superuser(username=opts["username"], email=opts["email"], password=password)
        self.stdout.write(self.style.SUCCESS(
            f"created admin user\n    username: {opts['username']}\n    password: {password}"
        ))
