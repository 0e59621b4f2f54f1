"""A data scientist's script through facades (the same text runs in process, imports rewritten)."""

from __future__ import annotations

import sys

from snakebridge_generated import numpy as np
from snakebridge_generated import pandas as pd
from snakebridge_generated.scipy import stats
from snakebridge_generated.sklearn.linear_model import LinearRegression


def main(csv: str) -> None:
    df = pd.read_csv(csv)  # an absolute path: workers do not share the caller's directory
    print(df.groupby("c").sum())
    print(df.sort_values("b", ascending=False).head(2))
    a = df["a"]
    df["d"] = a * 2
    print(len(df), list(df), "a" in df)
    s = -df["b"]
    print(s * 2, df["c"].str.upper())
    print(df.astype(str).iloc[1:3])
    print(df.shape, df.columns.tolist())
    model = LinearRegression().fit(df[["a"]], df["b"])
    print(model.coef_.round(6), round(float(model.intercept_), 6))
    print(round(float(stats.norm.cdf(1.96)), 9), round(float(stats.norm.ppf(0.5)), 9))
    print(np.add.outer([1, 2], [3, 4]), np.add.reduce([1, 2, 3]), np.mean([1.0, 2.0]))
    print(np.zeros(2, order="C"), df.pipe(lambda d: d["a"].sum()))
    print(df.pipe(lambda d: d.assign(e=d["a"] + 1)).head(2))


if __name__ == "__main__":
    main(sys.argv[1])
