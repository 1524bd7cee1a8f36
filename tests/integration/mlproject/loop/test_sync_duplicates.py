"""The duplicates check at the start of every round, against a real Label Studio and MLflow store:
bot annotations and predictions written twice on purpose are found and reported (even when
nothing else changed), and with --repair-duplicates the extras go while every human label stays.
"""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from mlproject.cli import app
from tests.support.projects import (LOOSE, annotate, bot_id, file_name, human_snapshot, ls_client, make_project,
                                         project_id, read, sync)

pytestmark = pytest.mark.integration


def choice(value: str) -> list:
    return [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [value]}}]


def test_duplicates_are_reported_every_round_and_repaired_on_request(labelstudio, tiny_champion, synthetic_data,
                                                                     tmp_path):
    champion = str(tiny_champion())
    title, truth = make_project(labelstudio, synthetic_data, 16, "duplicates")
    ls = ls_client(labelstudio)
    pid, bot = project_id(ls, title), bot_id(ls)
    state = ["--state-dir", str(tmp_path / "state")]
    tasks = read(ls, labelstudio, title)
    twice_by_people = tasks[0]  # two human annotations on one task: people may disagree; never "duplicates"
    annotate(ls, twice_by_people.id, truth[file_name(twice_by_people)])
    annotate(ls, twice_by_people.id, truth[file_name(twice_by_people)])
    first = sync(title, *LOOSE, "--budget", "3", *state)
    assert first.exit_code == 0 and "duplicates" not in first.output, first.output

    tasks = read(ls, labelstudio, title)
    auto = [t for t in tasks if any(a.completed_by == bot for a in t.annotations)]
    untouched = [t for t in tasks if not t.annotations]
    assert len(auto) >= 2 and len(untouched) >= 1, first.output
    originals = {t.id: next(a.id for a in t.annotations if a.completed_by == bot) for t in auto[:2]}
    for task in auto[:2]:  # a second round's machine label on the same task, as two concurrent syncs left them
        made = task.prediction_of(champion)
        ls.annotations.create(id=task.id, result=choice(made.choices[0]), completed_by=bot,
                              parent_prediction=made.id, ground_truth=False)
    ls.predictions.create(task=auto[0].id, result=choice("ok"), score=0.9, model_version=champion)
    # on an open task, the copy is the one a machine label links to: it stays, the older one goes
    open_task = untouched[0]
    older = open_task.prediction_of(champion)
    newer = ls.predictions.create(task=open_task.id, result=choice(older.choices[0]), score=0.9,
                                  model_version=champion)
    ls.annotations.create(id=open_task.id, result=choice(older.choices[0]), completed_by=bot,
                          parent_prediction=newer.id, ground_truth=False)
    people = human_snapshot(read(ls, labelstudio, title), bot)

    reported = sync(title, *LOOSE, "--budget", "3", *state)
    assert reported.exit_code == 0, reported.output
    assert "duplicates: 2 task(s) with more than one auto-label (2 extra), 2 task(s) with the same model " \
           "version's prediction more than once (2 extra); run `alloop sync --repair-duplicates`" in reported.output
    assert "nothing changed since round 1" in reported.output  # the check ran on the "nothing changed" path
    status = CliRunner().invoke(app, ["status", "--project", title])
    assert status.exit_code == 0 and "Written twice: 2 task(s) with more than one auto-label" in status.output
    assert len([a for t in read(ls, labelstudio, title) for a in t.annotations if a.completed_by == bot]) == \
        len(auto) + 3  # reporting deletes nothing

    repaired = sync(title, *LOOSE, "--budget", "3", "--repair-duplicates", *state)
    assert repaired.exit_code == 0, repaired.output
    assert "deleted 2 auto-label(s) and 2 prediction(s)" in repaired.output, repaired.output
    tasks = {t.id: t for t in read(ls, labelstudio, title)}
    for task in tasks.values():
        machine = [a for a in task.annotations if a.completed_by == bot]
        versions = [p.model_version for p in task.predictions]
        assert len(machine) <= 1 and len(versions) == len(set(versions)), task.id
    for task_id, original in originals.items():  # the oldest machine label stayed
        assert [a.id for a in tasks[task_id].annotations if a.completed_by == bot] == [original]
    assert [p.id for p in tasks[open_task.id].predictions] == [newer.id]  # the linked copy stayed
    assert human_snapshot(list(tasks.values()), bot) == people  # never a person's annotation
    assert len([a for a in tasks[twice_by_people.id].annotations if a.completed_by != bot]) == 2

    clean = sync(title, *LOOSE, "--budget", "3", *state)
    assert clean.exit_code == 0 and "duplicates" not in clean.output, clean.output
    assert re.search(r"nothing changed since round \d", clean.output), clean.output
    assert ls.projects.get(id=pid).model_version == champion
