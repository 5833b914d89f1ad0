"""Readers (and the one writer) for published fractal parameter files, returning ``ofdb.published.IFSSystem`` lists.

Two layouts exist, both one ``(maps, 13)`` float64 table per category with rows ``a, b, c, d, e, f, g, h, i, j, k,
l, prob`` (map ``x' = [[a,b,c],[d,e,f],[g,h,i]] x + (j,k,l)``, chosen with probability ``prob``):

* 3D-OFDB (github.com/ryoo-nakamura/OFDB, ``3d-ofdb-generator/3dfractal_render``): ``category_search.py`` writes
  one text file per category, ``%06d.csv`` in the parameter folder, with ``np.savetxt(path, params,
  delimiter=",")`` (so ``%.18e``, which round-trips float64 exactly); ``instance.py`` lists the folder, sorts the
  names and parses each file as comma-separated floats.
* The SIGNATE contest solution (github.com/hiranoko/PIDModuleContest_4thPlaceSolution,
  ``src/Pytorch3D/params/point_cloud_C1000_P10000_params.pkl``): a pickle of ``{category index: ndarray}``,
  indices ``0 .. n-1``. Unpickling can run arbitrary code, so it is read with an unpickler that admits only the
  globals numeric numpy arrays need and refuses anything else before it can run.

Every problem raises ``ParamsError`` (a ``ValueError``) naming the file and the fix.
"""

from __future__ import annotations

import io
import math
import os
import pickle
from pathlib import Path

import numpy as np

from dr_fdsl.errors import DrFdslError
from dr_fdsl.families.ofdb.published import IFSSystem

PARAM_COLUMNS = 13  # a..l, prob
_PROB_TOLERANCE = 1e-9  # published probabilities sum to 1 within a few ulps
_COLUMNS_FIX = "each row must be 13 comma-separated numbers: a, b, c, d, e, f, g, h, i, j, k, l, prob"
# What a refused file should become: the one other format bank.ofdb.source reads (3D-OFDB's own).
_CSV_FOLDER_FIX = ("a folder of 3D-OFDB CSVs (one %06d.csv per category, np.savetxt(path, table, delimiter=','); "
                   "dr_fdsl.families.ofdb.params_io.write_ofdb_csv_folder writes them) and point bank.ofdb.source at "
                   "it")
_NPY_MAGIC = b"\x93NUMPY"


class ParamsError(DrFdslError, ValueError):
    """A parameter file or folder that cannot be used; the message names the file and the fix."""


class UnsafePickleError(ParamsError):
    """A pickle that asks for a global outside the numeric allow-list. Nothing it asked for was run."""


def _check_table(params: np.ndarray, where: str) -> IFSSystem:
    """Validate one ``(maps, 13)`` table and turn it into a system."""
    if params.ndim != 2 or params.shape[1] != PARAM_COLUMNS or params.shape[0] < 1:
        raise ParamsError(f"{where}: expected a (maps, 13) table, got shape {params.shape}; {_COLUMNS_FIX}")
    bad = np.argwhere(~np.isfinite(params))
    if bad.size:
        r, c = bad[0]
        raise ParamsError(f"{where}: row {r + 1}, column {c + 1} is {float(params[r, c])}, not a finite number; "
                          "regenerate the file (a NaN or inf parameter cannot make a point cloud)")
    probs = params[:, 12]
    if (probs < 0).any() or abs(math.fsum(probs.tolist()) - 1.0) > _PROB_TOLERANCE:
        raise ParamsError(f"{where}: column 13 must hold the map probabilities, non-negative and summing to 1 "
                          f"(|det A| / sum |det A|), got {probs.tolist()}; check the column order (prob last)")
    return IFSSystem.from_params13(params)


def read_ofdb_csv(path: str | os.PathLike) -> IFSSystem:
    """One 3D-OFDB category file, ``(maps, 13)`` comma-separated, as ``category_search.py`` writes it.

    Blank lines are skipped. Unlike the published reader, a single-row file is accepted (``np.genfromtxt``
    returns a 1-D array for it and ``instance.py`` then misreads it; the search never writes fewer than 2 maps).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise ParamsError(f"{path}: no such file; pass a file written by 3D-OFDB's category_search.py") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ParamsError(f"{path}: cannot be read as a text CSV ({exc}); pass a plain-ASCII parameter file") \
            from None
    rows: list[list[float]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split(",")
        if len(fields) != PARAM_COLUMNS:
            raise ParamsError(f"{path}: line {lineno} has {len(fields)} values, expected 13; {_COLUMNS_FIX}")
        try:
            rows.append([float(f) for f in fields])
        except ValueError:
            raise ParamsError(f"{path}: line {lineno} holds a value that is not a number ({line.strip()!r}); "
                              f"{_COLUMNS_FIX}") from None
    if not rows:
        raise ParamsError(f"{path}: empty file; each category file needs at least one map row ({_COLUMNS_FIX})")
    return _check_table(np.array(rows, dtype=np.float64), f"{path}")


def read_ofdb_csv_folder(folder: str | os.PathLike, limit: int | None = None) -> list[IFSSystem]:
    """A 3D-OFDB parameter folder: every ``*.csv`` in sorted name order, category ``i`` = ``i``-th file.

    Args:
        folder: the ``--save_root`` of ``category_search.py`` (``3DIFS_params``).
        limit: read at most this many categories (``instance.py --classes``; it counts other files too).

    Returns:
        one system per CSV file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ParamsError(f"{folder}: not a folder; pass the folder category_search.py wrote (--save_root)")
    names = sorted(p.name for p in folder.iterdir() if p.suffix == ".csv" and p.is_file())
    if not names:
        raise ParamsError(f"{folder}: holds no .csv files; run category_search.py with --save_root {folder}")
    if limit is not None:
        names = names[:limit]
    return [read_ofdb_csv(folder / name) for name in names]


def write_ofdb_csv_folder(systems: list[IFSSystem], folder: str | os.PathLike) -> list[Path]:
    """Write ``%06d.csv`` files byte for byte as ``category_search.py`` does (``np.savetxt``, ``%.18e``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, system in enumerate(systems):
        path = folder / f"{i:06d}.csv"
        np.savetxt(path, system.to_params13(), delimiter=",")
        paths.append(path)
    return paths


class _Refused(pickle.UnpicklingError):
    """Raised inside the unpickler by the stand-ins below; reported as ``UnsafePickleError`` with the path."""


def _numeric_dtype(spec: object, align: bool = False, copy: bool = True) -> np.dtype:
    """Stand-in for ``numpy.dtype`` during unpickling: plain booleans, integers and floats only.

    Always a fresh copy (numpy's own pickles ask for one): the pickle's state is applied to the result next,
    and must never reach numpy's shared built-in dtype objects.
    """
    if isinstance(spec, str):
        try:
            dt = np.dtype(spec, align=bool(align), copy=True)
        except TypeError:
            dt = None
        if dt is not None and dt.kind in "biuf" and dt.fields is None and dt.subdtype is None:
            return dt
    raise _Refused(f"dtype {spec!r}, which is not a plain number type")


def _latin1_encode(text: object, encoding: str = "utf-8") -> bytes:
    """Stand-in for ``_codecs.encode``: protocol 0-2 pickles store bytes (an array's data) as latin-1 text."""
    if isinstance(text, str) and encoding in ("latin1", "latin-1"):
        return text.encode("latin-1")
    raise _Refused(f"_codecs.encode with encoding {encoding!r}")


def _array_from_buffer(buf: object, dtype: object, shape: object, order: object = "C") -> np.ndarray:
    """Stand-in for numpy's ``_frombuffer`` (protocol 5 pickles): numeric dtypes only, copied out of the buffer."""
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biuf" or dtype.fields is not None:
        raise _Refused(f"array buffer of dtype {dtype!r}, which is not a plain number type")
    if order not in ("C", "F"):
        raise _Refused(f"array buffer with order {order!r}")
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order).copy(order=order)


# numpy's array-reconstruction function, whichever module this numpy keeps it in
_RECONSTRUCT = np.empty(0).__reduce__()[0]
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,  # pickles from numpy 1.x
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,  # pickles from numpy 2.x
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _numeric_dtype,
    ("_codecs", "encode"): _latin1_encode,  # only in protocol 0-2 pickles
    ("numpy.core.numeric", "_frombuffer"): _array_from_buffer,  # protocol 5 pickles
    ("numpy._core.numeric", "_frombuffer"): _array_from_buffer,
}


class _NumericUnpickler(pickle.Unpickler):
    """Admits the globals of numeric numpy arrays and nothing else (dicts, lists, tuples, numbers and strings
    need no globals). A refused global is reported before anything in the pickle could call it."""

    def __init__(self, file: io.BufferedIOBase, path: Path):
        super().__init__(file)
        self._path = path

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self._path}: refused to load the global {module}.{name}: this reader admits only numpy arrays "
                "of numbers in plain containers, because unpickling anything else can run code. Fix: do not "
                f"load this file; if you trust its source, re-export the parameters as {_CSV_FOLDER_FIX}") from None

    def persistent_load(self, pid):
        raise UnsafePickleError(f"{self._path}: refused a persistent id ({pid!r}); only plain data is admitted")


def load_numeric_pickle(path: str | os.PathLike):
    """Unpickle a file that should hold only numeric numpy arrays in dicts, lists and tuples.

    Raises:
        UnsafePickleError: the pickle asks for any other global (e.g. ``os.system``); nothing was run.
        ParamsError: missing or unreadable file, or an object-dtype array.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            if f.read(len(_NPY_MAGIC)) == _NPY_MAGIC:
                # a natural guess for "numeric arrays", but one .npy holds one array, not a table per category
                raise ParamsError(f"{path}: is a .npy array file, which is not read here (only the contest's "
                                  f"pickle and 3D-OFDB CSV folders are); save the categories as {_CSV_FOLDER_FIX}")
            f.seek(0)
            obj = _NumericUnpickler(f, path).load()
    except FileNotFoundError:
        raise ParamsError(f"{path}: no such file; pass the contest's point_cloud_*_params.pkl") from None
    except IsADirectoryError:
        raise ParamsError(f"{path}: is a folder, not a pickle; pass the contest's point_cloud_*_params.pkl") \
            from None
    except ParamsError:  # the .npy refusal above, and UnsafePickleError from find_class
        raise
    except _Refused as exc:
        raise UnsafePickleError(f"{path}: refused {exc}: this reader admits only numpy arrays of numbers in plain "
                                f"containers. Fix: re-export the parameters as float arrays, or as "
                                f"{_CSV_FOLDER_FIX}") from None
    except Exception as exc:  # a truncated or corrupt pickle can fail in many ways; all mean "not readable"
        raise ParamsError(f"{path}: not a readable numeric pickle ({type(exc).__name__}: {exc}); "
                          "re-download or regenerate the parameter file") from None
    return obj


def read_contest_params(path: str | os.PathLike) -> list[IFSSystem]:
    """The contest solution's parameter pickle: ``{index: (maps, 13) ndarray}`` with indices ``0 .. n-1``.

    Returns:
        one system per category, in index order (``generate()`` reads ``ifs_params[idx]`` for ``idx in
        range(len(ifs_params))``).
    """
    path = Path(path)
    obj = load_numeric_pickle(path)
    if not isinstance(obj, dict) or not obj:
        raise ParamsError(f"{path}: expected a non-empty dict {{category index: (maps, 13) array}}, got "
                          f"{type(obj).__name__}; pass the contest's point_cloud_*_params.pkl")
    keys = list(obj)
    if not all(type(k) is int for k in keys) or sorted(keys) != list(range(len(keys))):
        raise ParamsError(f"{path}: category indices must be the integers 0..{len(keys) - 1}, got "
                          f"{sorted(keys, key=repr)[:5]}...; the contest generator indexes them that way")
    systems = []
    for k in range(len(keys)):
        value = obj[k]
        if not isinstance(value, np.ndarray) or value.dtype.kind not in "biuf":
            raise ParamsError(f"{path}: category {k} is a {type(value).__name__}, not a numeric array; "
                              f"{_COLUMNS_FIX}")
        systems.append(_check_table(value.astype(np.float64), f"{path}: category {k}"))
    return systems
