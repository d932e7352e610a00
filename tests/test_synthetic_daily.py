"""The 24/7 mode of the synthetic market (synthetic.calendar: daily) and a 7-day calendar through the
image stage: weekend records, period ends on the last calendar day of each week / month, and
5/20/60-record windows that are calendar days. The business-day default is unchanged."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from pipeline import paths
from pipeline.config import ConfigError, load_config, section_hash
from pipeline.images import build
from pipeline.images.executor import LocalExecutor
from pipeline.images.store import ImageSet
from pipeline.panel.build import make_panel, panel_settings_hash
from pipeline.panel.store import read_panel
from pipeline.panel.synthetic import generate_market, market_dates

SMALL = ["synthetic.n_stocks=6", "synthetic.end=1993-12-31", "synthetic.bayes_paths=8",
         "synthetic.bayes_samples=50", "images.start_year=1993", "images.end_year=1993",
         "images.sets=[I5/week, I20/month]", "images.workers=1"]


def test_default_calendar_is_business_days_and_keeps_the_panel_hash():
    cfg = load_config(None, SMALL)
    assert cfg.synthetic.calendar == "business"
    dates = market_dates(cfg.synthetic)
    assert dates.equals(pd.bdate_range(cfg.synthetic.start, cfg.synthetic.end))
    # The hash of a business-day panel is the one it had before the calendar was a setting.
    before = {k: v for k, v in dataclasses.asdict(cfg.synthetic).items() if k != "calendar"}
    assert panel_settings_hash(cfg) == section_hash(cfg.panel, before)
    daily = load_config(None, SMALL + ["synthetic.calendar=daily"])
    assert panel_settings_hash(daily) != panel_settings_hash(cfg)
    with pytest.raises(ConfigError, match=r"'synthetic\.calendar' is 'weekly'"):
        load_config(None, SMALL + ["synthetic.calendar=weekly"])


def test_daily_market_trades_every_calendar_day():
    cfg = load_config(None, SMALL + ["synthetic.calendar=daily"])
    dates = market_dates(cfg.synthetic)
    assert dates.equals(pd.date_range(cfg.synthetic.start, cfg.synthetic.end, freq="D"))
    panel, stocks = generate_market(cfg.synthetic)
    weekday = pd.DatetimeIndex(panel.date).day_of_week
    assert (weekday == 5).any() and (weekday == 6).any()
    # Within a stock's life there is a record on every calendar day, and no gaps.
    gaps = panel.groupby("stock_id").date.diff().dropna()
    assert (gaps == pd.Timedelta(days=1)).all()
    business, _ = generate_market(load_config(None, SMALL).synthetic)
    assert len(panel) > 1.3 * len(business)


def test_daily_market_builds_images_on_calendar_day_windows(tmp_path):
    cfg = load_config(None, SMALL + ["synthetic.calendar=daily", f"data_dir={tmp_path}", "name=crypto"])
    make_panel(cfg)
    panel = read_panel(paths.panel_dir(cfg))
    for image_set in ("I5/week", "I20/month"):
        build.build_image_set(cfg, image_set, LocalExecutor(1))
    week = ImageSet(paths.images_dir(cfg, "I5/week")).labels(1993)
    month = ImageSet(paths.images_dir(cfg, "I20/month")).labels(1993)
    assert len(week) > 0 and len(month) > 0
    # Weekly images are dated on Sundays (a 24/7 week ends on its last calendar day), monthly on
    # the month's last calendar day, weekends included.
    assert (pd.DatetimeIndex(week.date).day_of_week == 6).all()
    assert pd.DatetimeIndex(month.date).is_month_end.all()
    assert (pd.DatetimeIndex(month.date).day_of_week >= 5).any()
    close = panel.set_index(["stock_id", "date"]).close
    row = week.iloc[len(week) // 2]
    sid, t = int(row.stock_id), pd.Timestamp(row.date)
    # 5 records after a Sunday are the next 5 calendar days: ret_5d ends on Friday, ret_week
    # on the next Sunday, 7 records later.
    assert row.ret_5d == pytest.approx(close[(sid, t + pd.Timedelta(days=5))] / close[(sid, t)] - 1)
    assert row.ret_week == pytest.approx(close[(sid, t + pd.Timedelta(days=7))] / close[(sid, t)] - 1)
