"""pandas DataFrames and Series by value: for when one side has pandas but no pyarrow.

Extension 32 carries a DataFrame through Arrow when both sides have pyarrow (oob.py). Without
pyarrow on one side it carries ``["v", body]`` instead: ``body`` is packed by the value codec, so
every column's data is a numpy array (through shared memory when large, like any array) or a
list of values, and the receiver rebuilds the same dtypes, index, column labels, nulls and
``attrs`` with pandas and numpy alone.

A spec is a list whose first item names what it describes:

- ``["F", columns, index, [array, ...], attrs]`` a DataFrame, ``["S", name, index, array,
  attrs]`` a Series;
- an index: ``["range", start, stop, step, name]``, ``["multi", [index, ...], [codes, ...],
  names]`` or ``["index", array, name, freq]``;
- an array: ``["np", ndarray]``, ``["obj", [values]]``, ``["masked", dtype, data, mask]``
  (Int64, Float64, boolean…), ``["cat", codes, categories, ordered]``, ``["tz", dtype,
  utc datetime64 ndarray]``, ``["period", dtype, int64 ndarray]``, ``["interval", dtype,
  left, right]`` or ``["str", storage, na_is_nan, [str or None]]``.

What cannot be rebuilt exactly this way (sparse and ``pyarrow``-backed columns, dtypes whose
description does not survive a round trip through its string) is a :class:`NotByValue` error
naming the column, never a silent change.
"""

from __future__ import annotations

import sys
from typing import Any, List

_MASKED = ("IntegerArray", "FloatingArray", "BooleanArray")


class NotByValue(TypeError):
    """A pandas value that cannot cross by value exactly (one side has no pyarrow)."""


def has_module(name: str) -> bool:
    """Whether ``name`` can be imported here (``sys.modules[name] = None`` blocks it)."""
    if name in sys.modules:
        return sys.modules[name] is not None
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def encode(codec: Any, obj: Any, peer_arrow: bool) -> bytes:
    """``obj`` (a DataFrame or Series) as a by-value spec, packed by ``codec``; ``peer_arrow``:
    whether the receiver has pyarrow (for ``string[pyarrow]`` columns)."""
    import pandas as pd

    attrs = dict(obj.attrs) if obj.attrs else None
    if isinstance(obj, pd.Series):
        spec: List[Any] = [
            "S",
            obj.name,
            _index(obj.index, "the index", peer_arrow),
            _array(obj, f"Series {obj.name!r}", peer_arrow),
            attrs,
        ]
    else:
        arrays = [
            _array(obj.iloc[:, position], f"column {label!r}", peer_arrow)
            for position, label in enumerate(obj.columns)
        ]
        spec = [
            "F",
            _index(obj.columns, "the columns", peer_arrow),
            _index(obj.index, "the index", peer_arrow),
            arrays,
        ]
        spec.append(attrs)
    packed: bytes = codec.packer().pack(spec)  # own packer: the codec's is packing the message
    return packed


def decode(codec: Any, body: bytes) -> Any:
    """The DataFrame or Series ``body`` (from :func:`encode`) describes."""
    import pandas as pd

    spec = codec.unpack_nested(body)
    tag = spec[0]
    if tag == "S":
        _, name, index, array, attrs = spec
        values = _build_array(array)
        result: Any = pd.Series(values, index=_build_index(index), name=name, copy=True)
    elif tag == "F":
        _, columns, index, arrays, attrs = spec
        data = {position: _build_array(array) for position, array in enumerate(arrays)}
        result = pd.DataFrame(data, index=_build_index(index), copy=True)
        result.columns = _build_index(columns)
    else:
        raise ValueError(f"unknown pandas value kind {tag!r}")
    if attrs:
        result.attrs = attrs
    return result


# -- encoding ---------------------------------------------------------------------------------
def plain(obj: Any) -> bool:
    """Whether every column and the index of ``obj`` hold numpy numbers, booleans or datetimes.

    Such frames go by value even when both sides have pyarrow: their columns cross as numpy
    arrays through shared memory, which measured twice as fast as Arrow's round trip through
    ``to_pandas`` (1M rows of float64 + int64, echo).
    """
    import numpy as np
    import pandas as pd

    index = obj.index
    if type(index) is not pd.RangeIndex and not _plain(index.dtype, np):
        return False
    dtypes = [obj.dtype] if isinstance(obj, pd.Series) else list(obj.dtypes)
    return all(_plain(dtype, np) for dtype in dtypes)


def _plain(dtype: Any, np: Any) -> bool:
    return isinstance(dtype, np.dtype) and not dtype.hasobject


def _index(index: Any, what: str, peer_arrow: bool) -> List[Any]:
    import pandas as pd

    if type(index) is pd.RangeIndex:
        return ["range", index.start, index.stop, index.step, index.name]
    if isinstance(index, pd.MultiIndex):
        levels = [_index(level, f"{what} (a level)", peer_arrow) for level in index.levels]
        codes = [codes.copy() for codes in index.codes]  # numpy arrays (made read-only by pandas)
        return ["multi", levels, codes, list(index.names)]
    return ["index", _array(index, what, peer_arrow), index.name, index_freq(index, what)]


def index_freq(index: Any, what: str = "the index") -> Any:
    """The frequency of a DatetimeIndex or TimedeltaIndex as text (None: it has none)."""
    import pandas as pd

    if not isinstance(index, (pd.DatetimeIndex, pd.TimedeltaIndex)) or index.freq is None:
        return None
    freq = index.freqstr
    if _restored(index.freq, freq, "freq") is None:
        raise NotByValue(f"{what} has frequency {index.freq!r}, which cannot be sent by value")
    return freq


def with_freq(index: Any, freq: Any) -> Any:
    """``index`` with frequency ``freq`` (from :func:`index_freq`) again."""
    return index if freq is None else type(index)(index, freq=freq)


def _array(column: Any, what: str, peer_arrow: bool) -> List[Any]:
    """The spec of the values of a Series or an Index."""
    import numpy as np
    import pandas as pd

    dtype = column.dtype
    if isinstance(dtype, np.dtype):
        values = column.to_numpy()
        if dtype.hasobject:
            return ["obj", list(values)]  # the objects themselves (tolist() converts numpy's)
        return ["np", values]
    array = column.array
    if type(array).__name__ in _MASKED:
        _check_dtype(dtype, what)
        data = array.to_numpy(dtype=dtype.numpy_dtype, na_value=dtype.numpy_dtype.type(0))
        return ["masked", str(dtype), data, np.asarray(array.isna())]
    if isinstance(dtype, pd.CategoricalDtype):
        categories = _index(dtype.categories, f"the categories of {what}", peer_arrow)
        return ["cat", np.asarray(array.codes), categories, bool(dtype.ordered)]
    if isinstance(dtype, pd.DatetimeTZDtype):
        _check_dtype(dtype, what)
        return ["tz", str(dtype), np.asarray(array.tz_convert("UTC").tz_localize(None))]
    if isinstance(dtype, pd.PeriodDtype):
        _check_dtype(dtype, what)
        return ["period", str(dtype), np.asarray(array.asi8)]
    if isinstance(dtype, pd.IntervalDtype):
        _check_dtype(dtype, what)
        left = _array(pd.Index(array.left), f"{what} (left ends)", peer_arrow)
        return [
            "interval",
            str(dtype),
            left,
            _array(pd.Index(array.right), f"{what} (right ends)", peer_arrow),
        ]
    if isinstance(dtype, pd.StringDtype):
        na_is_nan = _na_is_nan(dtype)
        default = na_is_nan and dtype == _string_dtype(None, True)  # pandas 3's own "str"
        storage = None if default else dtype.storage
        if storage == "pyarrow" and not peer_arrow:
            raise NotByValue(
                f"{what} has dtype {dtype!r}, which needs pyarrow on the other side (it has "
                "none): convert it (e.g. .astype('string[python]')) or install pyarrow there"
            )
        values = array.to_numpy(dtype=object, na_value=None).tolist()
        return ["str", storage, na_is_nan, values]
    raise NotByValue(
        f"{what} has dtype {dtype}, which neither Arrow (when both sides have pyarrow) nor "
        "snakebridge's by-value pandas codec carries exactly: convert it first (e.g. "
        ".astype(object))"
    )


def _check_dtype(dtype: Any, what: str) -> None:
    if _restored(dtype, str(dtype), "dtype") is None:
        raise NotByValue(
            f"{what} has dtype {dtype!r}, which its name {str(dtype)!r} does not rebuild "
            "exactly; it cannot be sent by value (install pyarrow on both sides)"
        )


def _restored(value: Any, text: str, kind: str) -> Any:
    """``text`` parsed back (a dtype or a frequency) if it gives ``value`` again, else None."""
    import pandas as pd

    try:
        if kind == "dtype":
            back = pd.api.types.pandas_dtype(text)
        else:
            back = pd.tseries.frequencies.to_offset(text)
    except (TypeError, ValueError):
        return None
    return back if back == value else None


def _na_is_nan(dtype: Any) -> bool:
    na_value = getattr(dtype, "na_value", None)
    return isinstance(na_value, float)  # NaN: pandas 3's default "str"; else pd.NA


# -- decoding ---------------------------------------------------------------------------------
def _build_index(spec: List[Any]) -> Any:
    import pandas as pd

    tag = spec[0]
    if tag == "range":
        _, start, stop, step, name = spec
        return pd.RangeIndex(start, stop, step, name=name)
    if tag == "multi":
        _, levels, codes, names = spec
        return pd.MultiIndex(
            levels=[_build_index(level) for level in levels],
            codes=codes,
            names=names,
            verify_integrity=False,
        )
    if tag == "index":
        _, array, name, freq = spec
        values = _build_array(array)
        index = pd.Index(values, dtype=values.dtype, name=name, copy=True)
        return with_freq(index, freq)
    raise ValueError(f"unknown pandas index kind {tag!r}")


def _build_array(spec: List[Any]) -> Any:
    """A pandas array (or numpy array) from its spec. A numpy one may be the read-only view
    of a segment: the Series, Index or DataFrame made of it copies it (once)."""
    import numpy as np
    import pandas as pd

    tag = spec[0]
    if tag == "np":
        return spec[1]
    if tag == "obj":  # item by item: an item that is itself a sequence stays one object
        return np.fromiter(spec[1], dtype=object, count=len(spec[1]))
    if tag == "masked":
        _, dtype, data, mask = spec
        cls = pd.api.types.pandas_dtype(dtype).construct_array_type()
        return cls(np.array(data), np.array(mask, dtype=bool))
    if tag == "cat":
        _, codes, categories, ordered = spec
        dtype = pd.CategoricalDtype(_build_index(categories), ordered=ordered)
        return pd.Categorical.from_codes(np.array(codes), dtype=dtype)
    if tag == "tz":
        _, dtype, values = spec
        tz = pd.api.types.pandas_dtype(dtype).tz
        return pd.array(np.array(values)).tz_localize("UTC").tz_convert(tz)
    if tag == "period":
        _, dtype, values = spec
        return pd.arrays.PeriodArray(np.array(values), dtype=pd.api.types.pandas_dtype(dtype))
    if tag == "interval":
        _, dtype, left, right = spec
        interval = pd.api.types.pandas_dtype(dtype)
        return pd.arrays.IntervalArray.from_arrays(
            _build_array(left),
            _build_array(right),
            closed=interval.closed,
            dtype=interval,
            copy=True,
        )
    if tag == "str":
        _, storage, na_is_nan, values = spec
        return pd.array(values, dtype=_string_dtype(storage, na_is_nan))
    raise ValueError(f"unknown pandas array kind {tag!r}")


def _string_dtype(storage: Any, na_is_nan: bool) -> Any:
    """A string dtype: ``storage`` None is this side's default one (pandas 3's ``str`` is
    backed by pyarrow where it is installed, by Python objects elsewhere)."""
    import numpy as np
    import pandas as pd

    if storage == "pyarrow" and not has_module("pyarrow"):
        raise ValueError("a string[pyarrow] column was sent here, where pyarrow is missing")
    if na_is_nan:
        return pd.StringDtype(storage=storage, na_value=np.nan)
    return pd.StringDtype(storage=storage)
