"""``manage.py ingest PATH...``: FITS files and folders, the published archives, PNG catalogues."""

from __future__ import annotations

import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import OperationalError
from tqdm import tqdm

from rgzlabel.catalog.inputs import FITS_SUFFIXES, InputKind, plan_ingest
from rgzlabel.catalog.services import IngestReport, ingest_inputs
from rgzlabel.learning.ingest import sync_subjects_after_ingest


class Command(BaseCommand):
    help = (
        "Ingest radio images: FITS files or folders of them (searched recursively for "
        f"{', '.join(FITS_SUFFIXES)}), the MiraBest or FR-DEEP batches (tar.gz), the Griese "
        "HDF5 zip (no PATH: the copy in the installed firstgalaxydata package), or a folder of "
        "PNGs with a catalogue CSV (name, ra, dec, optional label). Sources are cross-matched "
        "by position; re-running skips unchanged inputs and updates changed ones. Exits with "
        "status 1 when any input failed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("paths", nargs="*", metavar="PATH", help="files or folders; none: the Griese set")
        parser.add_argument(
            "--radius",
            type=float,
            metavar="ARCSEC",
            help=f"cross-match radius (default RGZ_CROSSMATCH_RADIUS_ARCSEC={settings.RGZ_CROSSMATCH_RADIUS_ARCSEC:g})",
        )
        parser.add_argument(
            "--dataset",
            choices=[kind.value for kind in InputKind],
            help="read every PATH as this kind instead of recognising it",
        )
        parser.add_argument("--survey", help="survey of new sources, also their name prefix (default FIRST)")
        parser.add_argument(
            "--processes",
            type=int,
            default=1,
            metavar="N",
            help="read and preprocess FITS files in N processes (writing stays in order: the same result as 1)",
        )
        parser.add_argument(
            "--allow-no-position",
            action="store_true",
            help="ingest FITS files without a celestial WCS (not cross-matched) instead of failing them",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            self._ingest(options)
        except OperationalError as exc:
            # One line naming the setting, not a traceback from deep inside the first query.
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CommandError(f"cannot reach the database (DATABASE_URL): {reason}") from exc

    def _ingest(self, options: dict[str, Any]) -> None:
        if options["radius"] is not None and options["radius"] < 0:
            raise CommandError("--radius must be 0 or more arcsec")
        if options["processes"] < 1:
            raise CommandError("--processes must be 1 or more")
        verbosity = options["verbosity"]
        plan = plan_ingest(options["paths"], kind=options["dataset"])
        if verbosity >= 2:
            for ingest_input in plan.inputs:
                self.stdout.write(f"reading {ingest_input}")

        only_files = all(ingest_input.kind is InputKind.FITS for ingest_input in plan.inputs)
        # disable=None: no bar when stderr is not a terminal (a log file, a test).
        with tqdm(
            total=plan.expected,
            unit="file" if only_files else "record",
            desc="ingest",
            disable=True if verbosity == 0 else None,
            dynamic_ncols=True,
        ) as bar:
            shown = 0

            def on_record(report: IngestReport) -> None:
                nonlocal shown
                bar.update(report.total - bar.n)
                # Each failure is one line as it happens, written above the bar.
                for error in report.errors[shown:]:
                    with tqdm.external_write_mode(file=sys.stderr):
                        self.stderr.write(f"failed: {error}")
                shown = len(report.errors)

            report = ingest_inputs(
                plan,
                survey=options["survey"],
                radius_arcsec=options["radius"],
                allow_no_position=options["allow_no_position"],
                on_record=on_record,
                processes=options["processes"],
            )
            on_record(report)  # paths rejected before anything was read
        subjects = sync_subjects_after_ingest()

        self._write_warnings(report, verbosity)
        self.stdout.write(f"{report.summary()}; {subjects} new labelling subjects")
        if report.failed:
            raise CommandError(f"{report.failed} input(s) failed (listed above)", returncode=1)

    def _write_warnings(self, report: IngestReport, verbosity: int) -> None:
        if not report.warnings:
            return
        self.stdout.write(
            f"{len(report.warnings)} file(s) ingested with header warnings "
            "(each file's list is in its provenance's extra['warnings']; -v 2 prints them):"
        )
        for kind, files in report.warning_kinds.most_common():
            self.stdout.write(f"  {files} file(s): {kind}")
        if verbosity >= 2:
            for warning in report.warnings:
                self.stdout.write(f"  warning: {warning}")
