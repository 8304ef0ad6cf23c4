"""Writes live here (HackSoft styleguide): ``<entity>_<action>`` functions, keyword-only, typed."""
