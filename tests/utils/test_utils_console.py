"""Tables in log files are printed whole: off a terminal the console is wide, never 80 columns."""

from __future__ import annotations

import io

from rich.table import Table

from vprlab.evaluation.results import print_before_after, print_recall_table
from vprlab.utils.console import FILE_WIDTH, make_console

LONG_MODEL = "boq_dinov2_" + "x" * 120  # wider than 80 columns by itself


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_the_console_is_wide_and_cuts_no_cell():
    buffer = io.StringIO()
    console = make_console(file=buffer, color_system=None)
    assert console.width == FILE_WIDTH
    table = Table(title="t")
    table.add_column("model")
    table.add_row(LONG_MODEL)
    console.print(table)
    out = buffer.getvalue()
    assert LONG_MODEL in out and "…" not in out
    assert max(len(line) for line in out.splitlines()) < 200  # natural width, not padded to FILE_WIDTH


def test_on_a_terminal_rich_fits_the_window_and_an_explicit_width_wins():
    assert make_console(file=_Terminal(), width=100).width == 100
    assert make_console(file=io.StringIO(), width=90).width == 90
    assert make_console(file=_Terminal()).width != FILE_WIDTH


def test_recall_tables_printed_into_a_file_are_whole(capsys):
    # capsys replaces stdout with a non-terminal stream, like `python train.py > run.log`.
    print_recall_table([{"model": LONG_MODEL, "benchmark": "pitts30k_test", "R@1": 90.1, "R@5": 95.2}])
    print_before_after({"pitts30k_test_with_a_long_name": {"R@1": 1.0}}, {"pitts30k_test_with_a_long_name": {"R@1": 2.0}}, ks=(1,))
    out = capsys.readouterr().out
    assert LONG_MODEL in out and "pitts30k_test_with_a_long_name" in out and "…" not in out
