"""The admin project form is generated from strategy schemas and rejects what the strategy would refuse."""
from __future__ import annotations

import pytest
from tests.factories import empty_project, make_user
from django.test import Client

from annotate.forms import build_project_form, field_name
from annotate.models import Annotation, Project
from selection import DEFAULT_PARAMS, DEFAULT_STRATEGY, Param, Selection, Strategy, strategy_names
from selection.strategies import base

pytestmark = pytest.mark.django_db


class FakeStrategy(Strategy):
    name = "test_fake"
    description = "A strategy for the form tests"
    params = (
        Param("k", "int", 5, "Candidates per cluster.", min=1, max=10),
        Param("beta", "float", 1.0, "Temperature.", min=0.0, max=4.0),
        Param("mode", "str", "power", "How scores become probabilities.", choices=("power", "softmax")),
        Param("eps", "float", None, "Optional radius; empty means automatic.", min=0.0, nullable=True),
        Param("greedy", "bool", False, "Take the top scores instead of sampling."),
    )

    def _select(self, X_pool, probs_pool, **kw):  # pragma: no cover - never run here
        return Selection(indices=[])


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setitem(base._REGISTRY, FakeStrategy.name, FakeStrategy)
    return FakeStrategy


def _data(project, **params):
    data = {"name": project.name, "description": "", "classes_text": "cat\ndog", "strategy": "test_fake",
            "batch_size": 20, "refill_policy": "low_water", "refill_threshold": 10, "retrain_every": 0,
            "audit_rate": 0.1, "l2": 1.0, "seed": 0, "extractor": "pixels"}
    for k, v in {"k": 5, "beta": 1.0, "mode": "power", "eps": "", "greedy": "", "cold_start": "kmeans++"}.items():
        data[field_name("sp", "test_fake", k)] = params.get(k, v)
    for k, v in {"size": 32, "dim": 64, "color": "rgb", "batch": 256}.items():
        data[field_name("ep", "pixels", k)] = v
    return data


def test_fields_are_typed_with_defaults_ranges_and_help(fake):
    form = build_project_form()(instance=empty_project())
    k = form.fields[field_name("sp", "test_fake", "k")]
    assert type(k).__name__ == "IntegerField" and k.initial == 5 and "range [1, 10]" in k.help_text
    assert "Candidates per cluster." in k.help_text
    mode = form.fields[field_name("sp", "test_fake", "mode")]
    assert [c[0] for c in mode.choices] == ["power", "softmax"]
    assert type(form.fields[field_name("sp", "test_fake", "greedy")]).__name__ == "BooleanField"
    assert "test_fake" in [c[0] for c in form.fields["strategy"].choices]


@pytest.mark.parametrize("param, value, message", [
    ("k", 11, "less than or equal to 10"),
    ("k", 0, "greater than or equal to 1"),
    ("k", "2.5", "whole number"),
    ("beta", 4.5, "less than or equal to 4"),
    ("beta", -0.1, "greater than or equal to 0"),
    ("mode", "linear", "not one of"),
    ("eps", -1, "greater than or equal to 0"),
    ("beta", "", "may not be empty"),
])
def test_out_of_range_parameters_are_rejected(fake, param, value, message):
    project = empty_project()
    form = build_project_form()(data=_data(project, **{param: value}), instance=project)
    assert not form.is_valid()
    errors = " ".join(form.errors.get(field_name("sp", "test_fake", param), []))
    assert message in errors or message.replace("not one of", "Select a valid choice") in errors, form.errors
    assert Project.objects.get(pk=project.pk).strategy == DEFAULT_STRATEGY  # unchanged


def test_valid_parameters_are_saved_and_other_strategies_are_ignored(fake):
    project = empty_project()
    data = _data(project, k=10, beta=0.0, mode="softmax", eps="0.5", greedy="on")
    other = next((s for s in strategy_names() if s != "test_fake"), None)
    if other is not None:
        for p in base.get_strategy(other).schema():
            if p.type in ("int", "float") and p.max is not None:
                data[field_name("sp", other, p.name)] = p.max + 1000  # hidden, not chosen: not read
    form = build_project_form()(data=data, instance=project)
    assert form.is_valid(), form.errors
    form.save()
    project.refresh_from_db()
    assert project.strategy == "test_fake"
    assert project.strategy_params == {"k": 10, "beta": 0.0, "mode": "softmax", "eps": 0.5, "greedy": True,
                                       "cold_start": "kmeans++", "unseen_share": 0.5, "unseen_rule": "good_turing"}
    assert project.classes == ["cat", "dog"]


def test_every_registered_strategy_rejects_values_beyond_its_schema():
    project = empty_project()
    checked = 0
    for s in strategy_names():
        for p in base.get_strategy(s).schema():
            if p.type not in ("int", "float") or p.max is None:
                continue
            data = _data(project)
            data["strategy"] = s
            for q in base.get_strategy(s).schema():
                data[field_name("sp", s, q.name)] = "" if q.default is None else q.default
            data[field_name("sp", s, p.name)] = p.max + 1
            form = build_project_form()(data=data, instance=project)
            assert not form.is_valid() and field_name("sp", s, p.name) in form.errors, (s, p.name)
            checked += 1
    assert checked >= 0  # strategies without bounded numeric parameters have nothing to check


def test_audit_rate_and_classes_are_validated(fake):
    project = empty_project()
    data = _data(project)
    data["audit_rate"] = 1.5
    data["classes_text"] = "cat\ncat"
    form = build_project_form()(data=data, instance=project)
    assert not form.is_valid()
    assert "between 0 and 1" in str(form.errors["audit_rate"])
    assert "repeated" in str(form.errors["classes_text"])


def test_audit_target_halfwidth_is_validated_and_optional(fake):
    project = empty_project()
    data = _data(project)
    data["audit_target_halfwidth"] = 0.7
    form = build_project_form()(data=data, instance=project)
    assert not form.is_valid() and "between 0 (off) and 0.5" in str(form.errors["audit_target_halfwidth"])
    data["audit_target_halfwidth"] = 0.1
    form = build_project_form()(data=data, instance=project)
    assert form.is_valid(), form.errors
    assert form.cleaned_data["audit_target_halfwidth"] == 0.1
    del data["audit_target_halfwidth"]  # left out: the project's value stays
    form = build_project_form()(data=data, instance=project)
    assert form.is_valid(), form.errors
    assert form.cleaned_data["audit_target_halfwidth"] == project.audit_target_halfwidth


def test_admin_change_page_saves_a_strategy_change_for_the_next_round(fake, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    admin = make_user("root", is_superuser=True, is_staff=True)
    project = empty_project()
    c = Client()
    c.force_login(admin)
    page = c.get(f"/admin/annotate/project/{project.pk}/change/").content.decode()
    assert "test_fake parameters" in page and "loupe-sp-test_fake" in page
    data = _data(project, k=3)
    data.update({"memberships-TOTAL_FORMS": 0, "memberships-INITIAL_FORMS": 0,
                 "rounds-TOTAL_FORMS": 0, "rounds-INITIAL_FORMS": 0})
    r = c.post(f"/admin/annotate/project/{project.pk}/change/", data)
    assert r.status_code == 302, r.content.decode()[:2000]
    project.refresh_from_db()
    assert project.strategy == "test_fake" and project.strategy_params["k"] == 3
    data = _data(project, k=99)
    data.update({"memberships-TOTAL_FORMS": 0, "memberships-INITIAL_FORMS": 0,
                 "rounds-TOTAL_FORMS": 0, "rounds-INITIAL_FORMS": 0})
    r = c.post(f"/admin/annotate/project/{project.pk}/change/", data)
    assert r.status_code == 400 and "less than or equal to 10" in r.content.decode()
    project.refresh_from_db()
    assert project.strategy_params["k"] == 3


def test_round_history_inline_shows_the_latest_rounds_with_their_details(settings, tmp_path):
    from annotate.models import Round

    settings.MEDIA_ROOT = tmp_path
    admin = make_user("root2", is_superuser=True, is_staff=True)
    project = empty_project()
    Round.objects.bulk_create([
        Round(project=project, number=n, status="done", strategy="margin", params={"cold_start": "kcenter"},
              labeled_count=10 * n, timings={"train": 0.25, "select": 0.5}, metrics={"train_accuracy": 0.875})
        for n in range(1, 61)])
    Round.objects.filter(project=project, number=60).update(status="failed", failure="out of memory on the GPU")
    c = Client()
    c.force_login(admin)
    page = c.get(f"/admin/annotate/project/{project.pk}/change/").content.decode()
    assert "round history" in page.lower() and "out of memory on the GPU" in page
    # One compact line per round (the latest 30); the parameters, metrics and timings in the row's tooltip.
    assert page.count('<tr data-round="') == 30
    assert '<tr data-round="60" data-status="failed">' in page and '<tr data-round="31" data-status="done">' in page
    assert '<tr data-round="30"' not in page
    assert "train_accuracy 0.875" in page and "train s 0.25" in page and "kcenter" in page
    assert "<br" not in page.split('class="loupe-compact"')[1].split("</table>")[0]


def test_a_new_project_starts_on_the_library_default_in_the_model_and_the_add_form(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    assert DEFAULT_STRATEGY == "auto" and DEFAULT_STRATEGY in strategy_names()
    project = empty_project()
    assert project.strategy == DEFAULT_STRATEGY and project.strategy_params == DEFAULT_PARAMS
    admin = make_user("root3", is_superuser=True, is_staff=True)
    c = Client()
    c.force_login(admin)
    page = c.get("/admin/annotate/project/add/").content.decode()
    strategy_select = page.split('name="strategy"')[1].split("</select>")[0]  # not auto's own 'otherwise' choice
    selected = [chunk.split('"')[0] for chunk in strategy_select.split('<option value="')[1:]
                if 'selected' in chunk.split(">")[0]]
    assert selected == [DEFAULT_STRATEGY]


def test_round_history_names_the_strategy_auto_used(settings, tmp_path):
    from annotate.models import Round

    settings.MEDIA_ROOT = tmp_path
    admin = make_user("root4", is_superuser=True, is_staff=True)
    project = empty_project()
    Round.objects.create(project=project, number=1, status="done", strategy="auto",
                         metrics={"sub_strategy": "typiclust"})
    Round.objects.create(project=project, number=2, status="done", strategy="auto", metrics={"sub_strategy": "firal"})
    c = Client()
    c.force_login(admin)
    page = c.get(f"/admin/annotate/project/{project.pk}/change/").content.decode()
    assert "auto → typiclust" in page and "auto → firal" in page
    assert "auto → firal" in c.get("/admin/annotate/round/").content.decode()


def test_overlap_settings_are_validated_and_kept_when_absent(fake):
    project = empty_project()
    data = {**_data(project), "overlap_rate": 1.5, "overlap_k": 1}
    form = build_project_form()(data=data, instance=project)
    assert not form.is_valid()
    assert "between 0 and 1" in str(form.errors["overlap_rate"]) and "from 2 to 10" in str(form.errors["overlap_k"])
    form = build_project_form()(data={**_data(project), "overlap_rate": 0.25, "overlap_k": 3}, instance=project)
    assert form.is_valid(), form.errors
    saved = form.save()
    assert (saved.overlap_rate, saved.overlap_k) == (0.25, 3)
    form = build_project_form()(data=_data(project), instance=saved)  # a post without the fields keeps them
    assert form.is_valid(), form.errors
    assert (form.save().overlap_rate, saved.overlap_k) == (0.25, 3)


def test_selection_ranks_is_validated_and_kept_when_absent(fake):
    project = empty_project()
    assert project.selection_ranks == 1
    form = build_project_form()(data={**_data(project), "selection_ranks": 0}, instance=project)
    assert not form.is_valid() and "from 1 to 256" in str(form.errors["selection_ranks"])
    form = build_project_form()(data={**_data(project), "selection_ranks": 4}, instance=project)
    assert form.is_valid(), form.errors
    saved = form.save()
    assert saved.selection_ranks == 4
    form = build_project_form()(data=_data(project), instance=saved)  # a post without it keeps it
    assert form.is_valid(), form.errors
    assert form.save().selection_ranks == 4


def test_a_class_that_items_are_labeled_with_cannot_be_removed(fake, make_project):
    # Found by QA: removing a class in the admin saved silently and orphaned its labels.
    project = make_project(classes=("cat", "dog", "fox"))
    user = make_user()
    items = list(project.items.all()[:3])
    Annotation.objects.create(item=items[0], annotator=user, label="fox")
    Annotation.objects.create(item=items[1], annotator=user, label="fox", is_current=False)  # history only
    Annotation.objects.create(item=items[2], annotator=user, label="cat")
    data = _data(project)  # classes "cat\ndog": drops fox
    form = build_project_form()(data=data, instance=project)
    assert not form.is_valid()
    assert "cannot remove classes that items are labeled with: 'fox' (1 item)" in form.errors["classes_text"][0]
    data["classes_text"] = "cat\ndog\nfox\nowl"  # adding a class is fine
    form = build_project_form()(data=data, instance=project)
    assert "classes_text" not in form.errors
