"""reveal_type cases: common calls infer facade classes under mypy and pyright."""

from __future__ import annotations

from typing import reveal_type

from snakebridge_generated import pandas as pd
from snakebridge_generated.sklearn.linear_model import LinearRegression

df = pd.read_csv("data.csv")
reveal_type(df)  # DataFrame
reveal_type(df.groupby("c").sum())  # DataFrame
reveal_type(df.sort_values("b"))  # DataFrame
reveal_type(df.head(2))  # DataFrame
reveal_type(LinearRegression().fit(df[["a"]], df["b"]))  # LinearRegression
reveal_type(df["a"])  # Series
reveal_type(df[["a", "b"]])  # DataFrame
