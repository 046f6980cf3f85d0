"""Read and write dlib's imglab XML datasets (``dataset/images/image/box/part``).

The format dlib's own tools (imglab, train_simple_object_detector) use::

    <dataset><name>…</name><images>
      <image file='a.jpg' width='500' height='375'>
        <box top='90' left='194' width='37' height='37' ignore='1'>
          <part name='00' x='200' y='110'/> …
        </box>
      </image>
    </images></dataset>

``file`` is relative to the XML's folder. Boxes are integer pixels; a box
marked ``ignore='1'`` is neither a positive nor a negative when training or
testing (e.g. a half-hidden face).
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.store import DataError, atomic_path


@dataclass
class Box:
    left: int
    top: int
    width: int
    height: int
    ignore: bool = False
    parts: dict[str, tuple[int, int]] = field(default_factory=dict)   # name -> (x, y)

    @property
    def ltrb(self) -> tuple[int, int, int, int]:
        """[left, top, right, bottom) in pixels."""
        return self.left, self.top, self.left + self.width, self.top + self.height


@dataclass
class ImageEntry:
    file: str                        # as written in the XML (relative to the XML's folder)
    boxes: list[Box] = field(default_factory=list)
    width: int | None = None
    height: int | None = None


@dataclass
class Dataset:
    images: list[ImageEntry]
    name: str = ""
    comment: str = ""

    @property
    def n_boxes(self) -> int:
        return sum(1 for image in self.images for box in image.boxes if not box.ignore)


def _int(element, key: str, where: str) -> int:
    try:
        return int(round(float(element.attrib[key])))
    except KeyError:
        raise DataError(f"{where}: <{element.tag}> lacks '{key}'. Every box needs top, left, width "
                        f"and height (dlib imglab format).") from None
    except ValueError:
        raise DataError(f"{where}: <{element.tag}> has a non-numeric {key}={element.attrib[key]!r}.") from None


def read_dataset(path: str | Path) -> Dataset:
    """Parse an imglab XML file; errors name the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"imglab XML not found: {path}. Pass an existing file (make one with "
                        f"`make-detector-xml` or dlib's imglab).")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise DataError(f"{path}: not valid XML ({err}). Fix the file or regenerate it.") from err
    images_el = root.find("images")
    if root.tag != "dataset" or images_el is None:
        raise DataError(f"{path}: not an imglab dataset (expected <dataset><images>…). See dlib's imglab.")
    images = []
    for number, image_el in enumerate(images_el.findall("image"), 1):
        where = f"{path} image {number}"
        if "file" not in image_el.attrib:
            raise DataError(f"{where}: <image> lacks the 'file' attribute.")
        boxes = []
        for box_el in image_el.findall("box"):
            parts = {p.attrib.get("name", str(i)): (_int(p, "x", where), _int(p, "y", where))
                     for i, p in enumerate(box_el.findall("part"))}
            boxes.append(Box(_int(box_el, "left", where), _int(box_el, "top", where),
                             _int(box_el, "width", where), _int(box_el, "height", where),
                             ignore=box_el.attrib.get("ignore", "0") not in ("0", "", "false"),
                             parts=parts))
        width = int(image_el.attrib["width"]) if "width" in image_el.attrib else None
        height = int(image_el.attrib["height"]) if "height" in image_el.attrib else None
        images.append(ImageEntry(image_el.attrib["file"], boxes, width, height))
    return Dataset(images, name=root.findtext("name", ""), comment=root.findtext("comment", ""))


def write_dataset(path: str | Path, dataset: Dataset) -> Path:
    """Write an imglab XML file atomically (parts named as given; ignore='1' when set)."""
    root = ET.Element("dataset")
    ET.SubElement(root, "name").text = dataset.name
    ET.SubElement(root, "comment").text = dataset.comment
    images_el = ET.SubElement(root, "images")
    for image in dataset.images:
        attrib = {"file": image.file}
        if image.width is not None and image.height is not None:
            attrib.update(width=str(image.width), height=str(image.height))
        image_el = ET.SubElement(images_el, "image", attrib)
        for box in image.boxes:
            box_attrib = {"top": str(box.top), "left": str(box.left), "width": str(box.width),
                          "height": str(box.height)}
            if box.ignore:
                box_attrib["ignore"] = "1"
            box_el = ET.SubElement(image_el, "box", box_attrib)
            for name, (x, y) in box.parts.items():
                ET.SubElement(box_el, "part", {"name": name, "x": str(x), "y": str(y)})
    ET.indent(root, space="  ")
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(b"<?xml version='1.0' encoding='ISO-8859-1'?>\n")
            handle.write(b"<?xml-stylesheet type='text/xsl' href='image_metadata_stylesheet.xsl'?>\n")
            handle.write(ET.tostring(root, encoding="ISO-8859-1", xml_declaration=False))
            handle.write(b"\n")
    return path


def check_images(path: str | Path, dataset: Dataset) -> None:
    """Raise DataError naming every image file the dataset lists that does not exist."""
    folder = Path(path).parent
    missing = [image.file for image in dataset.images if not (folder / image.file).is_file()]
    if missing:
        raise DataError(f"{path}: {len(missing)} image file(s) listed but not found, e.g. "
                        f"{', '.join(missing[:3])} (paths are relative to {folder}). Fix the paths or "
                        f"regenerate the XML.")


__all__ = ["Box", "ImageEntry", "Dataset", "read_dataset", "write_dataset", "check_images"]
