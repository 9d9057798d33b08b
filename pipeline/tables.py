"""Reading tables written for people: CSV text in, checked float64 columns out.

One home for how a CSV is read (``ingest`` and ``predict --csv`` both read through
here): the byte-level checks (text, UTF-8, a header of sane length), the delimiter,
every row's field count against the header's, the line in the file of every row (blank
lines and quoted line breaks counted), and numbers written for people ("$150,000",
" 1,180 ") parsed into float64. Every mistake is a :class:`PipelineError` that names
the file, line and column.
"""

from __future__ import annotations

import csv
import io
import re
import sys
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.errors import PipelineError

#: What ``--csv -`` and the like mean: read standard input.
STDIN = "-"
DELIMITERS = ",;\t|"
#: The header must end within this many bytes: a longer "line" is not a CSV header
#: (e.g. a one-line file of gigabytes), and only this much is read to find out.
MAX_HEADER_BYTES = 1 << 20
# Larger magnitudes square past float64's range (about 1.8e308) in the MSE.
LARGEST_MAGNITUDE = 1e150
# Characters people put around numbers that carry no value: currency signs and spaces
# (also the narrow and non-breaking ones).
_DECORATION = r"[$€£¥\s\u00a0\u202f]"
# A comma is read as a thousands separator only where it separates groups of three
# digits: "1,5" (a decimal comma?) is refused rather than read as 15.
_COMMA_GROUPED = r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d*)?"
# "1.000" or "150.000": thousands grouped with dots, as written where the delimiter is
# ';'. Read as decimals they would be 1,000 times too small.
_DOT_GROUPED = r"[+-]?\d{1,3}(?:\.\d{3})+"
# A currency sign says the cell is an amount: "€150.000" is 150,000 in any file.
_CURRENCY = r"[$€£¥]"
_QUOTED = re.compile(r'"[^"]*"')
MISSING_WORDS = frozenset({"", "nan", "na", "n/a", "null", "none"})


@dataclass(frozen=True)
class TextTable:
    """A CSV as read: every cell text, with the file line of every data row.

    Attributes
    ----------
    source : str
        The file's name as the user gave it, for messages.
    cells : pandas.DataFrame of str, shape (n, columns)
        The data rows, in file order, with the header's column names.
    lines : ndarray of int, shape (n,)
        The line in the file where each data row starts (the header is line 1 when
        nothing precedes it).
    delimiter : str
        The delimiter used (given, or detected from the header line).
    header : tuple of str
        Every column the header names (``cells`` may keep only some of them).
    """

    source: str
    cells: pd.DataFrame
    lines: np.ndarray
    delimiter: str
    header: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.cells)

    def require(self, names: Sequence[str]) -> None:
        """Raise naming the columns that are missing and listing those there are."""
        require_columns(
            self.header or tuple(self.cells.columns), names, source=self.source, delimiter=self.delimiter
        )

    def where(self, row: int, column: str) -> str:
        """``file, line N, column 'x'`` of a data row (0-based), for messages."""
        return f"{self.source}, line {int(self.lines[row])}, column {column!r}"

    def numbers(self, column: str) -> np.ndarray:
        """One column parsed by :func:`parse_numbers`; missing cells are NaN, shape (n,)."""
        try:
            return parse_numbers(
                self.cells[column],
                where=lambda row: self.where(row, column),
                dot_thousands=self.delimiter == ";",
            )
        except BadCellError as bad:
            raise BadCellError(bad.where, bad.problem, bad.more, column) from None


def require_columns(
    columns: Collection[object], names: Sequence[str], *, source: str, delimiter: str | None = None
) -> None:
    """Raise naming the ``names`` not in ``columns`` and listing the columns there are.

    With a CSV's ``delimiter``, the message says which one was used and how to set it:
    a wrongly detected delimiter makes every column look missing.
    """
    missing = [name for name in names if name not in columns]
    if not missing:
        return
    absent = ", ".join(repr(name) for name in missing)
    available = ", ".join(repr(str(name)) for name in columns)
    used = ""
    if delimiter is not None:
        shown = {"\t": "tab"}.get(delimiter, repr(delimiter))
        used = f" (read with delimiter {shown}; set data.delimiter if that is wrong)"
    raise PipelineError(f"{source}: column {absent} not found; the columns are: {available}{used}")


def parse_numbers(
    cells: pd.Series, *, where: Callable[[int], str], dot_thousands: bool = False
) -> np.ndarray:
    """Parse text cells into float64; missing cells ("", "NaN", "null", …) become NaN.

    Parameters
    ----------
    cells : pandas.Series of str, shape (n,)
        The raw cells, in file order.
    where : callable
        ``where(i)`` names cell ``i`` in a message (file, line and column).
    dot_thousands : bool
        Refuse "1.000"-shaped cells as dot-grouped thousands (files delimited by ';');
        with a currency sign ("€150.000") they are refused in any file.

    Returns
    -------
    ndarray, shape (n,)

    Raises
    ------
    PipelineError
        At the first cell that is not a number, not finite, too large, or ambiguous.
    """
    text, numbers, dotted, bad = _parsed(cells, dot_thousands)
    if bad.size:
        row = int(bad[0])
        raw, number = text.iloc[row], numbers[row]
        if bool(dotted.iloc[row]):
            problem = (
                f"cannot read {raw!r} as a number: thousands grouped with dots, or a decimal? "
                "Write it without grouping (e.g. 1000 or 1.5)"
            )
        elif np.isnan(number):
            problem = f"cannot read {raw!r} as a number"
        elif np.isinf(number):
            problem = f"value {raw!r} is not a finite number"
        else:
            problem = f"value {raw!r} is too large: its square overflows float64"
        raise BadCellError(where(row), problem, bad.size - 1)
    return np.asarray(numbers, dtype=np.float64)


def _parsed(cells: pd.Series, dot_thousands: bool) -> tuple[pd.Series, np.ndarray, pd.Series, np.ndarray]:
    """:func:`parse_numbers`' work: the cells as text, their numbers (NaN where missing or
    bad), which are dot-grouped, and the positions of the bad ones."""
    text = cells.astype(str)
    cleaned = text.str.replace(_DECORATION, "", regex=True)
    missing = cleaned.str.lower().isin(MISSING_WORDS).to_numpy()
    misgrouped = cleaned.str.contains(",", regex=False) & ~cleaned.str.fullmatch(_COMMA_GROUPED)
    # Dot groups are refused where they are likely thousands: in ';' files, and in an amount.
    ambiguous = pd.Series(dot_thousands, index=cleaned.index) | text.str.contains(_CURRENCY, regex=True)
    dotted = cleaned.str.fullmatch(_DOT_GROUPED) & ambiguous
    cleaned = cleaned.str.replace(",", "", regex=False).mask(misgrouped | dotted, "not a number")
    numbers = pd.to_numeric(cleaned.mask(missing, "nan"), errors="coerce").to_numpy(
        np.float64, na_value=np.nan
    )
    with np.errstate(invalid="ignore"):
        bad = np.flatnonzero(~missing & ~(np.abs(numbers) < LARGEST_MAGNITUDE))
    return text, numbers, dotted, bad


def count_bad_cells(cells: pd.Series, *, dot_thousands: bool = False) -> int:
    """How many of ``cells`` :func:`parse_numbers` would refuse."""
    return int(_parsed(cells, dot_thousands)[3].size)


class BadCellError(PipelineError):
    """A cell that is not a usable number: where it is, why, how many more its column has."""

    def __init__(self, where: str, problem: str, more: int, column: str = "") -> None:
        self.where, self.problem, self.more, self.column = where, problem, more, column
        counted = f" ({more} more such cells in this column)" if more else ""
        super().__init__(f"{where}: {problem}{counted}")

    def counting(self, more: int) -> BadCellError:
        """The same cell, with ``more`` such cells found further down the file."""
        return BadCellError(self.where, self.problem, self.more + more, self.column)


def read_numeric(
    table: TextTable,
    names: Sequence[str],
    *,
    positive: Collection[str] = (),
    drop_missing: bool = False,
    missing_hint: str = "",
) -> tuple[pd.DataFrame, int]:
    """The columns ``names`` of a text table as float64, checked.

    Parameters
    ----------
    table : TextTable
        The CSV as read.
    names : sequence of str
        Columns to parse, in the order of the result.
    positive : collection of str
        Columns whose values must be > 0 (the data's declared domain).
    drop_missing : bool
        Drop rows with a missing cell instead of refusing the file.
    missing_hint : str
        Appended to the missing-cell message (what setting would drop such rows).

    Returns
    -------
    numbers : pandas.DataFrame, shape (n - dropped, len(names))
    dropped : int
        Rows dropped for a missing cell (0 unless ``drop_missing``).
    """
    table.require(names)
    if not len(table):
        raise PipelineError(f"{table.source}: no data rows below the header")
    numbers, first_blank = numeric_block(table, names, positive)
    if first_blank is None:
        return numbers, 0
    incomplete = numbers.isna().to_numpy().any(axis=1)
    if not drop_missing:
        raise PipelineError(
            f"{first_blank}: missing value ({int(incomplete.sum())} rows have one){missing_hint}"
        )
    return numbers[~incomplete].reset_index(drop=True), int(incomplete.sum())


def numeric_block(
    table: TextTable, names: Sequence[str], positive: Collection[str] = ()
) -> tuple[pd.DataFrame, str | None]:
    """The columns ``names`` of ``table`` as float64 (missing cells NaN), values checked;
    and where its first missing cell is (``file, line N, column 'x'``), or None."""
    numbers = pd.DataFrame({name: table.numbers(name) for name in names})
    for name in positive:
        values = numbers[name].to_numpy()
        not_positive = np.flatnonzero(values <= 0)
        if not_positive.size:
            row = int(not_positive[0])
            raise PipelineError(
                f"{table.where(row, name)}: {values[row]:g} is not > 0 "
                "(data.positive declares the column positive)"
            )
    blank = numbers.isna().to_numpy()
    if not blank.any():
        return numbers, None
    row, col = (int(i) for i in np.argwhere(blank)[0])
    return numbers, table.where(row, names[col])


#: Bytes of a CSV file read at a time by :func:`read_blocks` (each block ends where a row does) ...
BLOCK_BYTES = 8 << 20
#: ... but the first, which is always parsed by the rules (header, delimiter): kept small.
FIRST_BLOCK_BYTES = 256 << 10
#: A row (a quoted cell, say) longer than this many blocks is refused: memory stays bounded.
LONGEST_ROW_BLOCKS = 16


def _line_ends(data: bytes | memoryview) -> int:
    """How many line ends (``\\n``) ``data`` holds; numpy counts some five times faster
    than ``bytes.count``, which weighed on ingest (a few tenths of a second a GB)."""
    return int(np.count_nonzero(np.frombuffer(data, dtype=np.uint8) == 10))


def _row_end(buffer: bytearray, size: int) -> int:
    """Index just past the last line end in ``buffer[:size]`` outside quotes (0 if none).

    ``buffer`` starts at the start of a row, so quotes before a line end pair up
    (CSV escapes a quote inside a quoted cell by doubling it) exactly when it is a row's end.
    """
    if buffer.find(b'"', 0, size) < 0:  # the common case
        return buffer.rfind(b"\n", 0, size) + 1
    raw = np.frombuffer(buffer, dtype=np.uint8, count=size)
    inside = np.bitwise_xor.accumulate((raw == 34).view(np.uint8))  # 1 inside quotes
    outside = np.flatnonzero((raw == 10) & (inside == 0))
    return int(outside[-1]) + 1 if outside.size else 0


@dataclass
class RowBlock:
    """Whole rows of a CSV file, as read, and what it takes to parse them.

    The rows are ``data[:end]``, bytes as the file holds them (for the first block, the
    file's start, header included; what follows ``end`` is cut off), until the next
    block is read into the same buffer: :func:`read_blocks`. ``header_line`` is
    the file's header line, put before the rows to parse them alone (empty for the first
    block), and ``header`` its names. ``line_offset`` makes :func:`parse_csv` name the
    rows' lines in the file.
    """

    source: str
    data: bytearray
    end: int
    header_line: bytes
    header: Sequence[str]
    line_offset: int
    delimiter: str | None
    keep: Sequence[str] | None
    parsed: TextTable | None = None

    @property
    def rows(self) -> memoryview:
        """The block's rows, not copied (a copy of every block cost ingest a tenth of its time)."""
        return memoryview(self.data)[: self.end]

    @property
    def text(self) -> bytes:
        """The header line then the rows: a CSV text of its own."""
        return b"".join((self.header_line, self.rows))

    def table(self) -> TextTable:
        """The block as a :class:`TextTable`, every rule of :func:`read_csv` applied."""
        if self.parsed is None:
            self.parsed = parse_csv(
                self.text,
                source=self.source,
                delimiter=self.delimiter,
                line_offset=self.line_offset,
                keep=self.keep,
            )
        return self.parsed

    def plain_numbers(self, names: Sequence[str], positive: Collection[str] = ()) -> pd.DataFrame | None:
        """The columns ``names`` as float64, parsed by pyarrow (C++, several times faster),
        when every cell is a plain number that the rules accept as it is: finite, not too
        large, > 0 where ``positive``, none missing, the file UTF-8 and not delimited by
        ';' (where "1.000" may be thousands). None otherwise: then :meth:`table` applies
        the rules (numbers written for people, messages naming lines) to the block."""
        import pyarrow as pa
        import pyarrow.csv as pacsv

        data, end = self.data, self.end
        if self.delimiter in (None, ";") or not self.header_line or data.find(b"\0", 0, min(end, 65536)) >= 0:
            return None
        try:
            # ASCII is UTF-8, checked without decoding (the whole buffer: past the rows, the
            # file's next bytes, or at its end earlier ones)
            if not data.isascii():
                str(self.rows, "utf-8")
            block = pacsv.read_csv(
                pa.py_buffer(self.rows),
                # Pieces of 1 MiB, parsed on every core; quoted line breaks looked for where
                # there are quotes at all (looking costs time).
                read_options=pacsv.ReadOptions(block_size=1 << 20, column_names=list(self.header)),
                parse_options=pacsv.ParseOptions(
                    delimiter=self.delimiter, newlines_in_values=data.find(b'"', 0, end) >= 0
                ),
                convert_options=pacsv.ConvertOptions(
                    include_columns=list(names),
                    column_types=dict.fromkeys(names, pa.float64()),
                    null_values=[],
                    strings_can_be_null=False,
                ),
            )
        except (UnicodeDecodeError, pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowKeyError):
            return None
        numbers = pd.DataFrame({name: block.column(name).to_numpy() for name in names})
        values = numbers.to_numpy()
        with np.errstate(invalid="ignore"):
            if not (np.abs(values) < LARGEST_MAGNITUDE).all():  # also NaN and inf
                return None
        if any((numbers[name].to_numpy() <= 0).any() for name in positive):
            return None
        return numbers


def read_blocks(
    path: Path,
    *,
    setting: str,
    delimiter: str | None = None,
    keep: Sequence[str] | None = None,
    block_bytes: int = BLOCK_BYTES,
) -> Iterator[RowBlock]:
    """Read a CSV file as :class:`RowBlock` blocks of whole rows, in bounded memory.

    Every rule of :func:`read_csv` holds, with the same messages: each block is parsed
    by :func:`parse_csv` with the file's header line, and its rows keep their lines in
    the file (blank lines and quoted line breaks counted), so a bad row a hundred million
    lines down is named as one on line 3 is. ``keep`` as in :func:`parse_csv`. The first
    block is parsed at once (its header and delimiter hold for the others).
    """
    _checked_head(path, setting)
    source = str(path)
    with path.open("rb") as handle:
        size = min(block_bytes, FIRST_BLOCK_BYTES)
        header_line, header = b"", tuple[str, ...]()  # the first block holds the header
        lines_before = 0  # line ends in the file before the block
        # One buffer read into again for every block: fresh memory for each cost ingest
        # a tenth of its time (the kernel's page faults), and the rows are not copied.
        buffer = bytearray(block_bytes)
        while True:
            got = handle.readinto(memoryview(buffer)[:size])
            if not got:
                if not header_line:
                    parse_csv(b"", source=source)  # says the file is empty
                return
            end = got if got < size else _row_end(buffer, got)
            while not end:  # a row longer than the block: read on, into a larger buffer
                if got > LONGEST_ROW_BLOCKS * block_bytes:
                    raise PipelineError(
                        f"{source}, line {lines_before + 1}: a row runs over {got >> 20} MiB; "
                        'a quote (") that never closes?'
                    )
                buffer = buffer[:got] + bytearray(block_bytes)
                more = handle.readinto(memoryview(buffer)[got:])
                got += more
                end = got if not more else _row_end(buffer, got)
            handle.seek(end - got, io.SEEK_CUR)  # the cut row starts the next block
            # The header line, then the block, whose first row is line lines_before + 1.
            offset = lines_before - header_line.count(b"\n")
            block = RowBlock(source, buffer, end, header_line, header, offset, delimiter, keep)
            if not header_line:
                table = block.table()
                delimiter, header = table.delimiter, table.header
                header_line = _header_line(bytes(block.rows))
            lines_before += _line_ends(block.rows)
            size = block_bytes
            yield block


def _checked_head(path: Path, setting: str) -> None:
    """The first bytes of a CSV file, checked as :func:`read_csv` checks them."""
    if path.is_dir():
        raise PipelineError(f"{setting}: {path} is a folder, not a CSV file")
    if not path.is_file():
        raise PipelineError(f"{setting}: no such file: {path}")
    with path.open("rb") as handle:
        head = handle.read(MAX_HEADER_BYTES + 1)
    if b"\0" in head[:65536]:
        raise PipelineError(f"{path}: a binary file, not CSV text")
    if len(head) > MAX_HEADER_BYTES and b"\n" not in head and b"\r" not in head:
        raise PipelineError(
            f"{path}, line 1: the header line is longer than {MAX_HEADER_BYTES >> 20} MiB; not a CSV table"
        )


def _header_line(first_block: bytes) -> bytes:
    """The header line of a file's first block (its first line with text), BOM removed."""
    text = first_block.removeprefix(b"\xef\xbb\xbf")
    start = 0
    while True:
        end = _row_end_from(text, start)
        if text[start:end].strip():
            line = text[start:end]
            return line if line.endswith(b"\n") else line + b"\n"
        start = end


def _row_end_from(text: bytes, start: int) -> int:
    """Index just past the first line end at or after ``start`` outside quotes (or the end)."""
    quoted = False
    for index in range(start, len(text)):
        byte = text[index]
        if byte == 34:
            quoted = not quoted
        elif byte == 10 and not quoted:
            return index + 1
    return len(text)


def sniff_delimiter(header_line: str) -> str:
    """The most frequent of , ; tab | in the header line outside quotes (``,`` if none)."""
    bare = _QUOTED.sub("", header_line)
    counts = {delimiter: bare.count(delimiter) for delimiter in DELIMITERS}
    best = max(counts, key=lambda delimiter: counts[delimiter])
    return best if counts[best] > 0 else ","


def read_csv(path: Path, *, setting: str, delimiter: str | None = None) -> TextTable:
    """Read a CSV file (or standard input for ``-``) with every cell as text.

    Parameters
    ----------
    path : Path
        The file; ``-`` reads standard input.
    setting : str
        The setting or option that named the file (``data.path``, ``--csv``), for the
        message when there is no such file.
    delimiter : str or None
        None detects , ; tab or | from the header line.
    """
    if str(path) == STDIN:
        return parse_csv(sys.stdin.buffer.read(), source="standard input", delimiter=delimiter)
    _checked_head(path, setting)
    return parse_csv(path.read_bytes(), source=str(path), delimiter=delimiter)


def parse_csv(
    data: bytes,
    *,
    source: str,
    delimiter: str | None = None,
    line_offset: int = 0,
    keep: Sequence[str] | None = None,
) -> TextTable:
    """Parse CSV bytes into a :class:`TextTable` (see :func:`read_csv`).

    A UTF-8 byte-order mark, Windows line endings and quoted cells are accepted; blank
    lines are skipped (and counted in line numbers); a data row with more or fewer
    fields than the header is refused, naming its line. ``line_offset`` is added to
    every line number after the first (``data`` is a header line and a block of rows
    further down the file: :func:`read_blocks`); ``keep`` names the only columns whose
    cells are kept (all by default; every row's field count is checked all the same).
    """
    if b"\0" in data[:65536]:
        raise PipelineError(f"{source}: a binary file, not CSV text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        line += line_offset if line > 1 else 0
        raise PipelineError(
            f"{source}, line {line}: not UTF-8 text (byte 0x{data[error.start]:02x}); save it as UTF-8"
        ) from None
    if not text.strip():
        raise PipelineError(f"{source}: the file is empty")
    if delimiter is None:
        delimiter = sniff_delimiter(next(line for line in text.splitlines() if line.strip()))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header: list[str] | None = None
    rows: list[list[str]] = []
    lines: list[int] = []
    line = 1
    kept: list[int] | None = None
    try:
        for fields in reader:
            start, line = line, reader.line_num + 1 + line_offset
            if not fields:  # a blank line
                continue
            if header is None:
                header = fields
                repeated = sorted(name for name, count in Counter(header).items() if count > 1)
                if repeated:
                    raise PipelineError(
                        f"{source}: duplicate column name(s) {', '.join(map(repr, repeated))} in the header"
                    )
                if keep is not None:
                    kept = [index for index, name in enumerate(header) if name in keep]
                continue
            if len(fields) != len(header):
                raise PipelineError(
                    f"{source}, line {start}: {len(fields)} fields where the header has {len(header)} "
                    f"({', '.join(map(repr, header))}); a stray {delimiter!r} or an unnamed column?"
                )
            rows.append(fields if kept is None else [fields[index] for index in kept])
            lines.append(start)
    except csv.Error as error:
        raise PipelineError(f"{source}, line {line}: not a readable CSV row ({error})") from None
    assert header is not None  # the text is not blank, so some line has fields
    columns = header if kept is None else [header[index] for index in kept]
    cells = (
        pd.DataFrame(rows, columns=columns, dtype=str) if rows else pd.DataFrame(columns=columns, dtype=str)
    )
    return TextTable(source, cells, np.asarray(lines, dtype=np.int64), delimiter, header=tuple(header))
