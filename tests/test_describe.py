"""piximi_py.io.describe_image (axes, pixel size, channel names from headers)
and plane selection with projections, on real pixels in OME/ImageJ containers."""
import io

import numpy as np
import pytest
import tifffile
from PIL import Image

from piximi_py.io import ImageReadError, describe_image, read_image_bytes
from realdata import stardist_sample


@pytest.fixture(scope="module")
def stack():
    """A (Z=3, C=2, Y, X) uint16 stack built from the real StarDist image."""
    image = tifffile.imread(stardist_sample()[0]).astype(np.uint16)[:128, :160]
    z = np.stack([image // (k + 1) for k in range(3)])           # z-planes differ
    return np.stack([z, 65535 - z], axis=1)                      # ZCYX


def tif(array, **kwargs) -> bytes:
    b = io.BytesIO()
    tifffile.imwrite(b, array, **kwargs)
    return b.getvalue()


def test_ome_tiff(stack):
    data = tif(stack, ome=True, metadata={"axes": "ZCYX", "PhysicalSizeX": 0.325,
                                          "PhysicalSizeY": 0.5,
                                          "Channel": {"Name": ["DAPI", "GFP"]}})
    info = describe_image(data, "s.ome.tif")
    assert info["format"] == "TIFF" and info["kind"] == "ome"
    assert info["axes"] == "ZCYX" and info["sizes"] == {"Z": 3, "C": 2, "Y": 128, "X": 160}
    assert info["pixel_size"] == pytest.approx([0.5, 0.325])
    assert info["channel_names"] == ["DAPI", "GFP"]
    np.testing.assert_array_equal(read_image_bytes(data, index={"Z": 2, "C": 1}), stack[2, 1])
    np.testing.assert_array_equal(read_image_bytes(data, index={"C": 1}, project={"Z": "max"}),
                                  stack[:, 1].max(axis=0))
    mean = read_image_bytes(data, project={"Z": "mean"})
    np.testing.assert_allclose(mean, stack[:, 0].mean(axis=0), rtol=1e-6)
    with pytest.raises(ImageReadError, match="no axis"):
        read_image_bytes(data, project={"T": "max"})
    with pytest.raises(ImageReadError, match="'max' or 'mean'"):
        read_image_bytes(data, project={"Z": "median"})


@pytest.mark.parametrize("index, match", [({"Z": "a"}, "whole number"), ({"Z": 1.7}, "whole number"),
                                          ({"Z": True}, "whole number"), ({"Y": 3}, "part of the plane"),
                                          ({"Z": 3}, "outside axis Z of length 3")])
def test_bad_plane_indices_are_refused_before_decoding(stack, index, match, monkeypatch):
    """A bad index is the option's fault, said so, not the file's ("truncated or corrupt"), and is
    found before any pixel is decoded."""
    data = tif(stack, ome=True, metadata={"axes": "ZCYX"})

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded before the index was checked")

    monkeypatch.setattr(tifffile.TiffFile, "asarray", no_decoding)
    monkeypatch.setattr(tifffile.TiffPageSeries, "asarray", no_decoding)
    with pytest.raises(ImageReadError, match=match):
        read_image_bytes(data, index=index)


@pytest.mark.parametrize("kind", [{"ome": True}, {"imagej": True}, {}])
def test_one_plane_of_a_stack_decodes_only_its_pages(stack, kind, monkeypatch):
    """Picking planes reads their pages only (a large stack is not decoded whole for one plane);
    the pixels are the same as from the whole stack, also with the channels kept or projected."""
    data = tif(stack, metadata={"axes": "ZCYX"}, **kind)
    read = []
    asarray = tifffile.TiffFile.asarray

    def counted(self, key=None, **kwargs):
        read.append(len(key) if key is not None else None)
        return asarray(self, key=key, **kwargs)

    monkeypatch.setattr(tifffile.TiffFile, "asarray", counted)
    np.testing.assert_array_equal(read_image_bytes(data, index={"Z": 2, "C": "1"}), stack[2, 1])
    np.testing.assert_array_equal(read_image_bytes(data, index={"Z": -1.0}, keep_channels=True),
                                  np.moveaxis(stack[2], 0, -1))
    np.testing.assert_array_equal(read_image_bytes(data, index={"C": 0}, project={"Z": "max"}),
                                  stack[:, 0].max(axis=0))
    assert read == [1, 2, 3]


def test_imagej_tiff(stack):
    data = tif(stack, imagej=True, resolution=(1 / 0.25, 1 / 0.25),
               metadata={"axes": "ZCYX", "unit": "um"})
    info = describe_image(data)
    assert info["kind"] == "imagej" and info["axes"] == "ZCYX"
    assert info["pixel_size"] == pytest.approx([0.25, 0.25])
    np.testing.assert_array_equal(read_image_bytes(data, index={"Z": 1}), stack[1, 0])


@pytest.mark.parametrize("unit", ["um", "Micron", "\\u00B5m"])
def test_imagej_units_of_a_micron(stack, unit):
    """Every way ImageJ files spell a micron gives the pixel size (its escaped "\\u00B5m" too)."""
    data = tif(stack[0, 0], imagej=True, resolution=(2, 2), metadata={"unit": unit})
    assert describe_image(data)["pixel_size"] == pytest.approx([0.5, 0.5])


def test_a_nonsense_pixel_size_in_the_header_is_none(stack):
    """An OME header stating a pixel size of 0 or a negative one gives no pixel size, not a
    refusal of the file nor a negative area."""
    for value in ("0", "-0.5"):
        xml = ('<?xml version="1.0"?><OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">'
               '<Image ID="Image:0"><Pixels ID="Pixels:0" DimensionOrder="XYCZT" Type="uint16" SizeX="32" '
               f'SizeY="32" SizeC="1" SizeZ="1" SizeT="1" PhysicalSizeX="{value}" PhysicalSizeY="0.5">'
               '<Channel ID="Channel:0:0" SamplesPerPixel="1"/><TiffData/></Pixels></Image></OME>')
        b = io.BytesIO()
        tifffile.imwrite(b, stack[0, 0, :32, :32], description=xml, metadata=None)
        info = describe_image(b.getvalue())
        assert info["kind"] == "ome" and info["pixel_size"] is None, value


def test_plain_files(stack):
    plane = stack[0, 0]
    info = describe_image(tif(plane))                  # no unit: no pixel size
    assert info["axes"] == "YX" and info["pixel_size"] is None and info["kind"] == "plain"
    cm = tif(plane, resolution=(1e4 / 0.4, 1e4 / 0.4), resolutionunit="CENTIMETER")
    assert describe_image(cm)["pixel_size"] == pytest.approx([0.4, 0.4])
    b = io.BytesIO()
    Image.fromarray(np.stack([plane >> 8] * 3, -1).astype(np.uint8)).save(b, "PNG")
    info = describe_image(b.getvalue())
    assert info["format"] == "PNG" and info["axes"] == "YXS" and info["sizes"]["X"] == 160
    with pytest.raises(ImageReadError, match="single-plane"):
        read_image_bytes(b.getvalue(), index={"Z": 1})


def test_header_claims_are_checked_before_decoding():
    import time

    # a small TIFF whose header then claims 100000×100000 pixels
    data = bytearray(tif(np.zeros((8, 70000), np.uint8)))
    with tifffile.TiffFile(io.BytesIO(bytes(data))) as t:
        tags = t.pages[0].tags
        offsets = [tags[k].valueoffset for k in ("ImageWidth", "ImageLength")]
        assert tags["ImageWidth"].dtype == 4                      # LONG
    for off in offsets:
        data[off:off + 4] = (100000).to_bytes(4, "little")
    data = bytes(data)
    t = time.perf_counter()
    for fn in (describe_image, read_image_bytes):
        with pytest.raises(ImageReadError, match="100000×100000"):
            fn(data, "huge.tif")
    assert time.perf_counter() - t < 2
    with pytest.raises(ImageReadError, match="empty"):
        describe_image(b"")
    with pytest.raises(ImageReadError, match="not a PNG"):
        describe_image(b"hello world")
