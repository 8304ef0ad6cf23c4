"""The project setup page reads well: plain-word parameters with the paper term, the key map and its
explicit reset, errors beside their field, and a job page in words with links to the job that followed."""
from __future__ import annotations

import pytest
from django.test import Client

from annotate.forms import build_project_form, field_name
from tests.factories import empty_project as make_project
from tests.factories import make_user
from annotate.models import Job

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    c = Client()
    c.force_login(make_user("root", superuser=True))
    return c


def test_parameters_read_in_plain_words_with_the_paper_term_in_brackets():
    form = build_project_form()(instance=make_project())
    beta = form.fields[field_name("sp", "softmax", "beta")]
    assert beta.label == "Focus" and "[temperature β]" in beta.help_text and "range [0" in beta.help_text
    lam = form.fields[field_name("sp", "firal", "lam")]
    assert "[λ of Σ_z]" in lam.help_text and "SelectionContext" not in lam.help_text
    # The strategy dropdown stays narrow: every entry is short.
    assert max(len(label) for _, label in form.fields["strategy"].choices) <= 70


def test_the_setup_page_shows_the_key_map_and_reassigns_only_on_request(admin_client):
    project = make_project(classes=("cat", "dog", "bird"))
    page = admin_client.get(f"/admin/annotate/project/{project.pk}/change/").content.decode()
    assert 'id="keymap"' in page and "<kbd>1</kbd> cat" in page and "<kbd>3</kbd> bird" in page
    project.refresh_from_db()
    assert project.hotkeys == {"cat": "1", "dog": "2", "bird": "3"}
    project.hotkeys = {"cat": "9", "dog": "2", "bird": "3"}
    project.save()
    admin_client.get(f"/projects/{project.pk}/label/")
    project.refresh_from_db()
    assert project.hotkeys["cat"] == "9"  # kept: only the admin action changes a key
    r = admin_client.post(f"/admin/annotate/project/{project.pk}/reassign-keys/")
    assert r.status_code == 302
    project.refresh_from_db()
    assert project.hotkeys == {"cat": "1", "dog": "2", "bird": "3"}


def test_labeling_page_settings_are_checked_beside_their_field():
    project = make_project()
    data = {"name": project.name, "classes_text": "cat\ndog", "strategy": "margin", "batch_size": 20,
            "refill_policy": "low_water", "refill_threshold": 10, "retrain_every": 0, "audit_rate": 0.1, "l2": 1.0,
            "seed": 0, "extractor": "pixels", "candidate_coverage": 1.5, "suggest_min_accuracy": 0.7}
    form = build_project_form()(data=data, instance=project)
    assert not form.is_valid()
    assert "between 0.5 and 0.99" in str(form.errors["candidate_coverage"])
    assert "suggest_min_accuracy" not in form.errors


def test_a_job_page_says_what_happened_and_links_the_job_that_followed(admin_client):
    project = make_project()
    embed = Job.objects.create(project=project, kind=Job.Kind.EMBED, status=Job.Status.RUNNING)
    job = Job.objects.create(project=project, kind=Job.Kind.IMPORT, status=Job.Status.DONE, message="imported 3",
                             result={"imported": 3, "already_present": 1, "embedding_job": str(embed.pk),
                                     "skipped": [{"name": "x.txt", "reason": "not an image"}]})
    page = admin_client.get(f"/admin/annotate/project/{project.pk}/jobs/{job.pk}/").content.decode()
    assert "<th>Imported</th><td>3</td>" in page and "<th>Already present</th><td>1</td>" in page
    assert f'/admin/annotate/project/{project.pk}/jobs/{embed.pk}/' in page and "Embed job</a> (running)" in page
    assert "x.txt" in page and "not an image" in page
    assert f'href="/admin/annotate/project/{project.pk}/change/"' in page
