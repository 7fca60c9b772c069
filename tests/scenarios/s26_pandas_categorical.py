"""A pandas frame with a categorical column and a custom index."""

SETUP = """
import pandas as pd, numpy as np
s26_df = pd.DataFrame({"k": pd.Categorical(list("abcab") * 1000), "v": np.arange(5000)})
s26_df = s26_df.set_index(pd.Index(np.arange(5000) * 2, name="even"))
"""
FINGERPRINT = "(list(s26_df['k'].cat.categories), int(s26_df['v'].sum()), s26_df.index.name, str(s26_df.dtypes['k']))"
MUTATE = (
    "s26_df['k'] = s26_df['k'].cat.add_categories(['z']); s26_df['v'] *= 2; s26_df.index.name = 'x'"
)
