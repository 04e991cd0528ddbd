"""Celery workers for rgzlabel: ``celery -A workers worker -Q default`` (or ``-Q gpu``)."""

from workers.celery import app

__all__ = ["app"]
