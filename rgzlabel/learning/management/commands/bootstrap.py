from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand
from django.utils import timezone
from tqdm import tqdm

from rgzlabel.catalog.services import IngestReport, ingest_dataset
from rgzlabel.labelling.models import GoldLabel
from rgzlabel.labelling.services import (
    choose_field_guide_examples,
    default_workflow,
    seed_gold_from_catalogue,
    sync_subjects,
)
from rgzlabel.learning.jobs import create_job
from rgzlabel.learning.models import EmbeddingSet, EncoderVersion, Job

GRIESE_SIZE = 2158


class Command(BaseCommand):
    help = (
        "Make a fresh installation ready to label: load the FIRST images shipped by the "
        "firstgalaxydata package, and queue the first embedding and the background pretraining. "
        "Anything already there is reused."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--no-pretrain", action="store_true", help="do not queue the encoder pretraining")
        parser.add_argument(
            "--recover-interrupted",
            action="store_true",
            help="mark jobs left running as failed; only for a single-machine start before any worker runs",
        )

    def handle(self, *args, no_pretrain: bool = False, recover_interrupted: bool = False, **options) -> None:
        workflow = default_workflow()
        if recover_interrupted:
            interrupted = Job.objects.filter(state=Job.State.RUNNING).update(
                state=Job.State.FAILED,
                error="interrupted: the server stopped while this job ran",
                message="interrupted",
                finished_at=timezone.now(),
            )
            if interrupted:
                self.stdout.write(f"{interrupted} job(s) interrupted by the last stop were marked failed")
        # Always run: the ingest is idempotent and skips unchanged records in seconds, and a
        # changed or newer package is picked up.
        with tqdm(total=GRIESE_SIZE, desc="loading FIRST images (Griese et al.)", unit="img") as bar:

            def on_record(report: IngestReport) -> None:
                bar.update(report.total - bar.n)

            report = ingest_dataset("griese", on_record=on_record)
        self.stdout.write(f"FIRST images: {report.summary()}")
        for error in report.errors[:20]:
            self.stderr.write(f"  not loaded: {error}")

        new_subjects = sync_subjects(workflow)
        if new_subjects:
            noun = "sources" if new_subjects != 1 else "source"
            self.stdout.write(f"{new_subjects} {noun} added to the {workflow.name} workflow")
        if not GoldLabel.objects.filter(workflow=workflow).exists():
            gold = seed_gold_from_catalogue(workflow)
            self.stdout.write(f"{gold} gold-standard sources taken from the literature labels")
        examples = choose_field_guide_examples(workflow)
        if examples:
            self.stdout.write(
                f"{examples} field-guide example{'s' if examples != 1 else ''} chosen (kept out of the queue)"
            )

        if not EmbeddingSet.objects.filter(is_active=True).exists() and not self._active(Job.Kind.EMBED):
            job = create_job(Job.Kind.EMBED, {"method": "pca"})
            self.stdout.write(f"queued a quick pixel-PCA embedding (job {job.pk}) so labelling can start now")

        if not no_pretrain and not EncoderVersion.objects.exists():
            last = Job.objects.filter(kind=Job.Kind.PRETRAIN).first()
            if last is None or last.state == Job.State.FAILED:
                job = create_job(Job.Kind.PRETRAIN, {"preset": settings.RGZ_PRETRAIN_PRESET})
                self.stdout.write(f"queued encoder pretraining, preset {settings.RGZ_PRETRAIN_PRESET!r} (job {job.pk})")
            else:
                self.stdout.write(f"encoder pretraining: job {last.pk} is {last.state} ({last.progress:.0%})")

    @staticmethod
    def _active(kind: str) -> bool:
        return Job.objects.filter(kind=kind, state__in=Job.ACTIVE_STATES).exists()
