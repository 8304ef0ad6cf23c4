"""A project with selection_ranks > 1: the round's 'firal' selection runs as an MPI job (issue 17)."""
import os

import pytest

from annotate.models import Round
from annotate.services.annotations import annotation_submit
from annotate.services.queue import queue_lease
from selection.firal.mpi import mpi_available

pytestmark = pytest.mark.django_db

_REASON = mpi_available()
if _REASON and os.environ.get("LOUPE_REQUIRE_SERVICES") == "1":
    raise RuntimeError(f"LOUPE_REQUIRE_SERVICES=1 but MPI is unavailable: {_REASON}")


def _label_first_batch(project, make_round, make_user):
    user = make_user("ann")
    from tests.factories import add_member

    add_member(project, user)
    first = make_round(project)
    assert first.status == Round.Status.DONE
    for e in queue_lease(project=project, user=user, n=project.batch_size):
        annotation_submit(project=project, user=user, item_id=e.item_id, label=e.item.ground_truth)
    Round.objects.filter(project=project, status=Round.Status.QUEUED).delete()


@pytest.mark.skipif(_REASON is not None, reason=f"MPI: {_REASON}")
def test_a_round_selects_over_two_ranks(make_project, make_round, make_user):
    project = make_project(n_items=60, batch_size=9, strategy="firal", selection_ranks=2,
                           strategy_params={"round_candidates": 0})
    _label_first_batch(project, make_round, make_user)
    rnd = make_round(project)
    assert rnd.status == Round.Status.DONE, rnd.failure
    info = rnd.metrics["strategy_info"]
    assert info["ranks"] == 2 and info["round_candidates"] > 0
    picked = [e.item_id for e in rnd.entries.all()]
    assert len(picked) == 9 and len(set(picked)) == 9


def test_a_failing_mpi_job_fails_the_round_with_the_reason(make_project, make_round, make_user,
                                                           monkeypatch):
    project = make_project(n_items=40, batch_size=6, strategy="firal", selection_ranks=3)
    _label_first_batch(project, make_round, make_user)
    monkeypatch.setenv("LOUPE_MPIRUN", "/bin/false")   # every launch exits 1
    with pytest.raises(Exception, match="MPI job|mpi4py"):
        make_round(project)
    rnd = Round.objects.filter(project=project).order_by("-number").first()
    assert rnd.status == Round.Status.FAILED
    assert "MPI job (3 ranks) failed" in rnd.failure or "mpi4py" in rnd.failure
    assert not rnd.entries.exists()
