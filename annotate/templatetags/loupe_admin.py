"""Template filters of the project admin pages (annotate/admin_parts.py does the work)."""
from django import template

from ..admin_parts import round_row

register = template.Library()


@register.filter
def as_round_row(rnd):
    return round_row(rnd)
