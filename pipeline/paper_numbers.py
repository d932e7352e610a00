"""The paper's reference numbers (docs/method.md section 10 and Table 18 of section 9) as data.

Units: annualised returns as decimal fractions (0.84 = 84% a year; the "I20/R20 EW" table, given in
percent in METHOD, is converted), Sharpe ratios annualised, turnover in percent per month, accuracy
as fractions. ``None`` = not reported. Every entry names its source:

    NB   the authors' executed notebook          T4   image of the paper's table (top-500)
    2nd  secondary transcription (unverified)    IG   low-trust infographic
    SSRN Table 18 of the SSRN 2020 version (METHOD 9)

Split: the weekly, decile, accuracy and top-500 numbers are JF 2023 (test 2001-2019); Table 18 is
SSRN (test 2000-2019). The project default split is SSRN, so put these *beside* project numbers
only as a reference point, never as a pass/fail target.
"""

from __future__ import annotations

from dataclasses import dataclass

DECILE_ROWS = ("Low", "2", "3", "4", "5", "6", "7", "8", "9", "High", "H-L")
SOURCES = {"NB": "authors' executed notebook", "T4": "image of the paper's table",
           "2nd": "secondary transcription (unverified)", "IG": "low-trust infographic",
           "SSRN": "SSRN 2020 Table 18"}


@dataclass(frozen=True)
class DecileReference:
    """One paper decile table: 11 values each (Low, 2..9, High, H-L); None = not reported."""

    strategy: str  # "I20", "MOM", ...
    horizon: int
    universe: str  # "all" | "top500"
    split: str  # "jf" | "ssrn"
    source: str
    ew_ret: tuple[float | None, ...]
    ew_sr: tuple[float | None, ...]
    vw_ret: tuple[float | None, ...] = (None,) * 11
    vw_sr: tuple[float | None, ...] = (None,) * 11
    turnover_ew: float | None = None  # % per month
    turnover_vw: float | None = None
    hl_stars_ew: str = ""  # significance stars the paper prints on the EW H-L return

    def row(self, label: str) -> dict:
        i = DECILE_ROWS.index(label)
        return {"ew_ret": self.ew_ret[i], "ew_sr": self.ew_sr[i],
                "vw_ret": self.vw_ret[i], "vw_sr": self.vw_sr[i]}


_N = None

DECILE_TABLES: dict[tuple[str, int, str], DecileReference] = {
    ("I20", 5, "all"): DecileReference(
        "I20", 5, "all", "jf", "NB",
        ew_ret=(-.324, -.038, .036, .081, .124, .153, .188, .229, .273, .518, .842),
        ew_sr=(-1.94, -.21, .20, .43, .65, .80, .97, 1.19, 1.40, 2.76, 6.75),
        vw_ret=(-.027, .020, .045, .058, .058, .089, .091, .112, .112, .196, .223),
        vw_sr=(-.16, .12, .24, .32, .34, .51, .49, .61, .59, .99, 1.74),
        turnover_ew=667.0, turnover_vw=729.0),
    ("I20", 20, "all"): DecileReference(
        "I20", 20, "all", "jf", "2nd",
        ew_ret=(-.02, .05, .07, .09, .11, .11, .13, .14, .15, .18, .21),
        ew_sr=(-.12, .28, .39, .49, .59, .59, .74, .81, .87, 1.04, 2.16),
        vw_sr=(_N,) * 10 + (.49,), turnover_ew=173.0, hl_stars_ew="***"),
}

# Top-500 EW deciles [T4]: (ret, SR) for Low..High, H-L; turnover (% per month).
_TOP500 = {
    "I5": ([(.05, .28), (.06, .34), (.07, .39), (.09, .50), (.07, .41), (.10, .54), (.08, .42),
            (.10, .53), (.13, .68), (.17, .82), (.12, 1.02)], 712.0, "***"),
    "I20": ([(.06, .35), (.06, .36), (.07, .41), (.10, .52), (.08, .45), (.09, .47), (.08, .45),
             (.11, .56), (.12, .61), (.15, .75), (.09, .78)], 676.0, "***"),
    "I60": ([(.03, .16), (.04, .24), (.06, .33), (.10, .51), (.08, .45), (.09, .51), (.11, .57),
             (.11, .60), (.13, .69), (.14, .79), (.11, 1.08)], 638.0, "***"),
    "MOM": ([(.07, .23), (.09, .39), (.10, .54), (.10, .63), (.11, .72), (.10, .72), (.11, .72),
             (.09, .60), (.09, .50), (.11, .53), (.05, .19)], 30.0, ""),
    "STR": ([(.09, .37), (.12, .60), (.11, .64), (.11, .68), (.10, .66), (.10, .65), (.10, .60),
             (.09, .52), (.08, .47), (.07, .32), (-.02, -.11)], 47.0, ""),
    "WSTR": ([(.10, .42), (.11, .61), (.12, .65), (.12, .78), (.09, .57), (.11, .68), (.10, .65),
              (.09, .53), (.08, .46), (.05, .21), (-.05, -.30)], 47.0, ""),
    "TREND": ([(.07, .26), (.07, .35), (.09, .47), (.11, .66), (.11, .67), (.11, .74), (.10, .67),
               (.10, .68), (.10, .63), (.11, .51), (.04, .22)], 42.0, ""),
}
for _s, (_vals, _to, _st) in _TOP500.items():
    DECILE_TABLES[(_s, 5, "top500")] = DecileReference(
        _s, 5, "top500", "jf", "T4", ew_ret=tuple(v[0] for v in _vals),
        ew_sr=tuple(v[1] for v in _vals), turnover_ew=_to, hl_stars_ew=_st)


@dataclass(frozen=True)
class HLReference:
    """A paper H-L summary: annualised ret/SR for EW and VW, turnover % per month."""

    strategy: str
    horizon: int
    universe: str
    split: str
    source: str
    ew_ret: float | None = None
    ew_sr: float | None = None
    vw_ret: float | None = None
    vw_sr: float | None = None
    turnover_ew: float | None = None
    turnover_vw: float | None = None


HL_TABLES: dict[tuple[str, int, str], HLReference] = {
    ("I5", 5, "all"): HLReference("I5", 5, "all", "jf", "2nd", .83, 7.15, .23, 1.49, 690.0),
    ("I20", 5, "all"): HLReference("I20", 5, "all", "jf", "NB", .84, 6.75, .22, 1.74, 667.0, 729.0),
    ("I60", 5, "all"): HLReference("I60", 5, "all", "jf", "2nd", .54, 4.89, .16, 1.44, 619.0),
    ("WSTR", 5, "all"): HLReference("WSTR", 5, "all", "jf", "IG", ew_sr=2.8),
    ("TREND", 5, "all"): HLReference("TREND", 5, "all", "jf", "IG", ew_sr=2.92),
    ("I20", 20, "all"): HLReference("I20", 20, "all", "jf", "2nd", .21, 2.16, None, .49, 173.0),
    ("MOM", 20, "all"): HLReference("MOM", 20, "all", "jf", "2nd", .07, .25, turnover_ew=63.0),
    ("STR", 20, "all"): HLReference("STR", 20, "all", "jf", "2nd", .11, .55, turnover_ew=168.0),
    ("WSTR", 20, "all"): HLReference("WSTR", 20, "all", "jf", "2nd", .18, 1.23, turnover_ew=167.0),
    # Time-scale transfer I5 -> I20/R20 [NB] (METHOD 11), kept for the report.
    ("I5->I20", 20, "all"): HLReference("I5->I20", 20, "all", "jf", "NB", ew_sr=2.14, vw_sr=.73,
                                        turnover_ew=177.0),
    ("I5->I60", 60, "all"): HLReference("I5->I60", 60, "all", "jf", "NB", ew_sr=.90),
}
for (_s, _h, _u), _ref in list(DECILE_TABLES.items()):
    if _u == "top500":
        HL_TABLES[(_s, _h, _u)] = HLReference(_s, _h, _u, _ref.split, _ref.source, _ref.ew_ret[-1],
                                              _ref.ew_sr[-1], turnover_ew=_ref.turnover_ew)

# Accuracy, JF Table 2 [2nd]: (strategy, horizon) -> fraction.
ACCURACY: dict[tuple[str, int], float] = {
    ("I5", 20): .525, ("I20", 20): .533, ("I60", 20): .536, ("MOM", 20): .521,
    ("I5", 60): .536, ("I20", 60): .532, ("I60", 60): .529, ("MOM", 60): .521,
}

# Date-averaged correlations and sample size, I20/R5 [NB].
CORRELATIONS: dict[tuple[str, int], dict] = {
    ("I20", 5): {"spearman": .0764, "pearson": .0572, "n": 6_099_305, "source": "NB", "split": "jf"},
}

# Table 18 (SSRN, I20/R20), METHOD 9: (group, variant label, model name) -> metrics.
TABLE18_COLUMNS = ("loss_v", "loss_t", "acc_v", "acc_t", "spearman", "pearson", "sr_ew", "sr_vw")
TABLE18: list[tuple[str, str, str, tuple[float, ...]]] = [
    ("Baseline", "", "I20", (.688, .692, .540, .525, .052, .032, 2.18, .56)),
    ("Filters (64)", "32", "I20-filters32", (.688, .691, .541, .526, .053, .032, 1.91, .43)),
    ("Filters (64)", "128", "I20-filters128", (.692, .692, .535, .527, .050, .030, 2.01, .45)),
    ("Layers (3)", "2", "I20-layers2", (.688, .692, .540, .525, .047, .028, 1.61, .19)),
    ("Layers (3)", "4", "I20-layers4", (.689, .692, .538, .524, .051, .031, 2.00, .38)),
    ("Dropout (0.50)", "0.00", "I20-dropout0.00", (.698, .695, .532, .521, .044, .027, 2.32, .54)),
    ("Dropout (0.50)", "0.25", "I20-dropout0.25", (.691, .693, .536, .525, .050, .030, 2.11, .56)),
    ("Dropout (0.50)", "0.75", "I20-dropout0.75", (.691, .692, .530, .525, .041, .024, 1.30, .05)),
    ("BN (yes)", "no", "I20-nobn", (.685, .691, .549, .528, .059, .037, 2.44, .58)),
    ("Xavier (yes)", "no", "I20-noxavier", (.688, .692, .540, .526, .053, .033, 2.10, .39)),
    ("Activation (LReLU)", "ReLU", "I20-relu", (.689, .693, .538, .520, .052, .031, 1.71, .35)),
    ("Max-pool size (2x1)", "2x2", "I20-pool2x2", (.687, .692, .545, .526, .056, .034, 2.09, .41)),
    ("Filter size (5x3)", "3x3", "I20-kernel3x3", (.689, .693, .538, .522, .050, .028, 1.39, .28)),
    ("Filter size (5x3)", "7x3", "I20-kernel7x3", (.688, .691, .541, .527, .055, .033, 2.01, .41)),
    ("Dilation/Stride ((2,1)/(3,1))", "(2,1)/(1,1)", "I20-dil21-str11",
     (.689, .692, .537, .526, .052, .033, 2.04, .53)),
    ("Dilation/Stride ((2,1)/(3,1))", "(1,1)/(3,1)", "I20-dil11-str31",
     (.689, .692, .538, .526, .049, .030, 1.66, .17)),
    ("Dilation/Stride ((2,1)/(3,1))", "(1,1)/(1,1)", "I20-dil11-str11",
     (.687, .692, .545, .527, .055, .035, 2.09, .52)),
]


def decile_reference(strategy: str, horizon: int, universe: str = "all") -> DecileReference | None:
    """The paper's decile table for a strategy ('I20', 'MOM', ...), or None if not reported."""
    return DECILE_TABLES.get((strategy, int(horizon), universe))


def hl_reference(strategy: str, horizon: int, universe: str = "all") -> HLReference | None:
    """The paper's H-L summary for a strategy, or None if not reported."""
    return HL_TABLES.get((strategy, int(horizon), universe))


def table18_reference(model: str) -> dict | None:
    """Table-18 metrics (SSRN) of a registry model name, as {column: value}, or None."""
    for _group, _label, name, vals in TABLE18:
        if name == model:
            return dict(zip(TABLE18_COLUMNS, vals, strict=True))
    return None


def cnn_reference(model: str, horizon: int, universe: str = "all",
                  split: str = "ssrn") -> HLReference | None:
    """The paper's H-L reference for a CNN run, preferring numbers of the run's own split.

    SSRN-split I20/R20 runs (the baseline and every Table-18 variant) get Table 18's Sharpe
    ratios; otherwise the JF-era summaries of :data:`HL_TABLES` (or None).
    """
    if split == "ssrn" and int(horizon) == 20 and universe == "all":
        t18 = table18_reference(model)
        if t18 is not None:
            return HLReference(model, 20, "all", "ssrn", "SSRN", ew_sr=t18["sr_ew"],
                               vw_sr=t18["sr_vw"])
    return hl_reference(model, horizon, universe)


def classification_reference(model: str, horizon: int, split: str = "ssrn") -> dict:
    """Paper accuracy / loss / correlations for a CNN run, each with its source; {} if none."""
    out: dict = {}
    if split == "ssrn" and int(horizon) == 20:
        t18 = table18_reference(model)
        if t18 is not None:
            out.update({"loss": t18["loss_t"], "accuracy": t18["acc_t"],
                        "spearman": t18["spearman"], "pearson": t18["pearson"],
                        "source": "SSRN 2020 Table 18 (test 2000-2019)"})
            return out
    if (model, int(horizon)) in ACCURACY:
        out.update({"accuracy": ACCURACY[(model, int(horizon))],
                    "source": "JF 2023 Table 2 [2nd] (test 2001-2019)"})
    if (model, int(horizon)) in CORRELATIONS:
        c = CORRELATIONS[(model, int(horizon))]
        out.update({"spearman": c["spearman"], "pearson": c["pearson"],
                    "source": "authors' notebook [NB] (JF, test 2001-2019)"})
    return out
