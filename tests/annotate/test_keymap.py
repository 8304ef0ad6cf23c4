"""Keys follow class names and stay put (services/keymap.py)."""
import string

import pytest

from annotate.services.keymap import KEY_ORDER, keymap_complete, keymap_reset, keymap_sync

pytestmark = pytest.mark.django_db


def test_one_character_names_get_their_own_key():
    assert keymap_complete(["0", "1", "2", "3", "4"]) == {c: c for c in "01234"}
    assert keymap_complete(list("abcdefghijklmnopqrstuvwxyz")) == {c: c for c in string.ascii_lowercase}
    assert keymap_complete(["A", "b", "C"]) == {"A": "a", "b": "b", "C": "c"}


def test_other_names_get_free_keys_in_class_order_skipping_keys_other_names_claim():
    assert keymap_complete(["cat", "dog", "bird"]) == {"cat": "1", "dog": "2", "bird": "3"}
    # "1" belongs to the class named "1" even though "other" comes first.
    assert keymap_complete(["other", "1", "2"]) == {"other": "3", "1": "1", "2": "2"}
    # Two names asking for the same key: the first gets it, the second a free one.
    assert keymap_complete(["a", "A"]) == {"a": "a", "A": "1"}


def test_beyond_36_keys_classes_have_none_and_no_key_repeats():
    classes = [f"class {i}" for i in range(1000)]
    keys = keymap_complete(classes)
    assert len(keys) == len(KEY_ORDER) == 36
    assert len(set(keys.values())) == 36
    assert list(keys) == classes[:36]


def test_a_stored_map_is_kept_when_classes_change_and_reset_only_on_request(make_project):
    project = make_project(classes=("cat", "dog", "bird"))
    assert keymap_sync(project=project) == {"cat": "1", "dog": "2", "bird": "3"}
    # A class is added in front and one removed: the kept classes keep their keys.
    project.classes = ["ant", "cat", "bird"]
    project.save()
    assert keymap_sync(project=project) == {"ant": "2", "cat": "1", "bird": "3"}  # dog's key was free
    project.refresh_from_db()
    assert project.hotkeys == {"ant": "2", "cat": "1", "bird": "3"}
    assert keymap_reset(project=project) == {"ant": "1", "cat": "2", "bird": "3"}
    project.refresh_from_db()
    assert project.hotkeys["ant"] == "1"


def test_the_labeling_page_shows_each_class_with_its_key(make_project, make_user, client):
    from annotate.models import Membership

    user = make_user("ann")
    project = make_project(classes=("0", "1", "2", "3", "4"), members=[(user, Membership.Role.ANNOTATOR)])
    client.force_login(user)
    html = client.get(f"/projects/{project.pk}/label/").content.decode()
    for c in "01234":
        assert f'data-label="{c}" title="{c}" data-hotkey="{c}"' in html
    assert 'data-zoom-reset-key=""' in html  # "0" is a class here, so it does not reset the zoom
