"""The PVWatts chain computed with pvlib, for tests/pvwatts.rs to compare.

Usage: pvwatts.py TMY3_PATH PANELS_JSON

PANELS_JSON is a list of {"name", "peak_w", "tilt_deg", "azimuth_deg",
"gamma_per_c", "losses", "albedo"}. Prints {"pvlib": VERSION, "annual_kwh":
{name: kWh}} as JSON: for each hour, the sun at the middle of the hour
(hour-ending stamps minus 30 minutes), isotropic-sky plane-of-array
irradiance, SAPM cell temperature (open rack glass/glass, 1 m/s wind),
PVWatts DC power, times (1 - losses).
"""

import json
import sys

import pandas as pd
import pvlib


def main():
    path, panels = sys.argv[1], json.loads(sys.argv[2])
    data, meta = pvlib.iotools.read_tmy3(path, map_variables=True)
    mid = data.index - pd.Timedelta(minutes=30)
    sun = pvlib.solarposition.get_solarposition(
        mid, meta["latitude"], meta["longitude"], altitude=meta["altitude"]
    )
    sun.index = data.index
    # SAPM open rack glass/glass, as locus_energy::panel uses; the same
    # as pvlib's TEMPERATURE_MODEL_PARAMETERS["sapm"]["open_rack_glass_glass"].
    thermal = {"a": -3.47, "b": -0.0594, "deltaT": 3.0}
    out = {}
    for p in panels:
        poa = pvlib.irradiance.get_total_irradiance(
            p["tilt_deg"],
            p["azimuth_deg"],
            sun["apparent_zenith"],
            sun["azimuth"],
            data["dni"],
            data["ghi"],
            data["dhi"],
            albedo=p["albedo"],
            model="isotropic",
        )
        poa_global = poa["poa_global"].fillna(0.0).clip(lower=0.0)
        cell = pvlib.temperature.sapm_cell(
            poa_global,
            data["temp_air"],
            1.0,
            thermal["a"],
            thermal["b"],
            thermal["deltaT"],
        )
        dc = pvlib.pvsystem.pvwatts_dc(
            poa_global, cell, p["peak_w"], p["gamma_per_c"]
        )
        out[p["name"]] = float((dc * (1.0 - p["losses"])).sum() / 1000.0)
    print(json.dumps({"pvlib": pvlib.__version__, "annual_kwh": out}))


if __name__ == "__main__":
    main()
