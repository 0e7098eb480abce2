"""Tabular EHR preprocessing: a scikit-learn ColumnTransformer fitted on the training split."""

from __future__ import annotations

import numpy as np

from ..errors import NotFittedError
from ..records import Tabular

__all__ = ["TabularPreprocessor"]


class TabularPreprocessor:
    """Impute (with missing indicators), scale and one-hot encode one row of EHR features.

    Numeric columns: median imputation with indicators, then a quantile transform to a normal
    distribution (robust to the skewed, unit-laden lab values of real exports). Categorical
    columns: most-frequent imputation and one-hot encoding where categories rarer than
    ``min_frequency`` are pooled and unseen ones ignored.
    """

    def __init__(self, *, min_frequency: int = 5, exclude: tuple[str, ...] = ("patient_id",)) -> None:
        self.min_frequency = min_frequency
        self.exclude = tuple(exclude)

    def _frame(self, rows: list[Tabular]):
        import pandas as pd

        df = pd.DataFrame([r.values for r in rows])
        return df.drop(columns=[c for c in self.exclude if c in df.columns])

    def fit(self, rows: list[Tabular]) -> "TabularPreprocessor":
        import pandas as pd
        from sklearn.compose import ColumnTransformer
        from sklearn.impute import SimpleImputer
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import OneHotEncoder, QuantileTransformer

        df = self._frame(rows)
        numeric, categorical = [], []
        for c in df.columns:
            conv = pd.to_numeric(df[c], errors="coerce")
            (numeric if conv.notna().sum() >= df[c].notna().sum() * 0.95 and df[c].notna().any() else categorical).append(c)
        self.numeric_, self.categorical_ = numeric, categorical
        n_q = max(2, min(100, len(df)))
        self.transformer_ = ColumnTransformer(
            [
                ("num", make_pipeline(  # the quantile transform passes NaN through to the imputer
                    QuantileTransformer(n_quantiles=n_q, output_distribution="normal"),
                    SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
                ), numeric),
                ("cat", make_pipeline(
                    SimpleImputer(strategy="most_frequent", keep_empty_features=True),
                    OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=self.min_frequency,
                                  sparse_output=False),
                ), categorical),
            ],
            sparse_threshold=0.0,
        )
        self.transformer_.fit(self._coerce(df))
        self.n_features_ = int(self.transformer_.transform(self._coerce(df.iloc[:1])).shape[1])
        return self

    def _coerce(self, df):
        import pandas as pd

        df = df.reindex(columns=self.numeric_ + self.categorical_)
        for c in self.numeric_:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
        for c in self.categorical_:
            df[c] = df[c].astype(object).where(df[c].notna(), np.nan)
        return df

    def transform_many(self, rows: list[Tabular]) -> np.ndarray:
        if not hasattr(self, "transformer_"):
            raise NotFittedError("TabularPreprocessor is not fitted", hint="call fit() on training rows first")
        return self.transformer_.transform(self._coerce(self._frame(rows))).astype(np.float32)

    def transform(self, row: Tabular) -> np.ndarray:
        return self.transform_many([row])[0]

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (self.n_features_,)
