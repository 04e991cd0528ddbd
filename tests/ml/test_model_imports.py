import subprocess
import sys

MODULES = [
    "config",
    "device",
    "encoder",
    "byol",
    "augment",
    "train",
    "checkpoint",
    "embed",
    "classifier",
    "finetune",
    "errors",
]


def test_ml_imports_no_django_celery_or_project_packages():
    code = (
        "import sys\n"
        + "".join(f"import ml.{name}\n" for name in MODULES)
        + "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'django', 'celery', 'rgzlabel', 'workers'})\n"
        + "print(','.join(bad))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == ""
