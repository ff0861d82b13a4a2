"""Terminal summaries of what a job wrote and how validation went."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

from mmfs.pipelines.spark.validation import ValidationReport

console = Console(stderr=False)


def print_reports(reports: list[ValidationReport], out_paths: dict[str, str]) -> None:
    """Print one table of every report's rule results, then where each output was written."""
    table = Table(title="validation summary", show_lines=False)
    for column in ("table", "stage", "rows", "rule", "failed rows", "status"):
        table.add_column(column)
    for report in reports:
        for i, result in enumerate(report.results):
            status = "[green]ok" if result.failed == 0 else ("[red]error" if result.failed < 0 else "[yellow]quarantined")
            if report.stage == "output" and result.failed:
                status = "[red]FAILED"
            table.add_row(
                report.table if i == 0 else "",
                report.stage if i == 0 else "",
                str(report.rows) if i == 0 else "",
                result.rule,
                str(max(result.failed, 0)),
                status,
            )
    console.print(table)
    for name, path in out_paths.items():
        console.print(f"[bold]{name}[/bold] -> {path}")
