"""The detection: water index and masks on the GPU, combined here."""
BANDS = ("blue", "green", "red", "nir", "swir")
WATER_NDWI = 0.2
TURBID_RED = 0.06


def flood_fraction(sys, gpu, tile):
    """Share of the tile that is turbid water (water where land should be)."""
    bands = list(tile["bands"])
    image = tile["reflectance"]
    green, nir, red = (image[bands.index(b)] for b in ("green", "nir", "red"))
    ndwi = sys.ioctl(gpu, "run", kernel="ndi", inputs={"a": green, "b": nir})["output"]
    water = sys.ioctl(gpu, "run", kernel="threshold", inputs={"x": ndwi},
                      params={"value": WATER_NDWI})["output"]
    turbid = sys.ioctl(gpu, "run", kernel="threshold", inputs={"x": red},
                       params={"value": TURBID_RED})["output"]
    flooded = water & turbid
    return float(flooded.mean())
