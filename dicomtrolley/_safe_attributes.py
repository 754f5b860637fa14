"""The standard text attributes that Table E.1-1 does not name and that pseudonymisation keeps.

Every other standard attribute whose VR can hold text (PN, LO, SH, ST, LT,
UT, UC, UR, AE, DA, DT, TM) and that the table does not name is removed: an
attribute is kept because someone decided it is harmless, never because
nobody thought of it. Each entry here was reviewed as such: it names a
device model, an acquisition technique, a code or a processing step, values
a viewer or an analysis needs, and no person, place or moment. Free text
among them (LO, SH, ST, LT, UT, UC) is still cleaned of the dataset's
identifying values. Inside a sequence the table replaces as a whole (action
D, e.g. a person's identification code sequence) nothing here is kept:
there even a code's meaning may be a person's name.

Attributes with other VRs (CS, IS, DS, US, UI, ...) need no entry: they are
kept unless the table names them.
"""

from __future__ import annotations

from pydicom.datadict import tag_for_keyword

SAFE_KEYWORDS: frozenset[str] = frozenset({
    # The file's own description, and the codes that describe anything (concept names, units, anatomy).
    "ImplementationVersionName", "CodeValue", "CodingSchemeDesignator", "CodingSchemeVersion", "CodeMeaning",
    "LongCodeValue", "URNCodeValue", "MappingResourceName", "CodingSchemeName", "DeidentificationMethod",
    # The device model and software (the device's identity, serial numbers and names, is the table's).
    "Manufacturer", "ManufacturerModelName", "SoftwareVersions", "ReceiveCoilManufacturerName",
    # How the image was acquired and reconstructed.
    "ConvolutionKernel", "FilterType", "SequenceName", "PulseSequenceName", "ReceiveCoilName", "TransmitCoilName",
    "ImagedNucleus", "ReconstructionMethod", "Radiopharmaceutical", "ContrastBolusRoute", "ContrastBolusIngredient",
    "AcquisitionDeviceProcessingCode", "TransducerData", "ProcessingFunction", "ScatterCorrectionMethod",
    "AttenuationCorrectionMethod", "DetectorManufacturerName", "DetectorManufacturerModelName", "CollimatorGridName",
    "PixelSpacingCalibrationDescription",
    # What a segmentation's segments are and what made them (their free descriptions are not here).
    "SegmentLabel", "SegmentAlgorithmName",
    # How to display it and what its pixels mean.
    "WindowCenterWidthExplanation", "RescaleType", "ModalityLUTType", "LUTExplanation", "PositionReferenceIndicator",
    "DimensionDescriptionLabel", "StackID", "MIMETypeOfEncapsulatedDocument",
})
"""Keywords of the reviewed harmless text attributes."""

SAFE_TAGS: frozenset[int] = frozenset(int(tag_for_keyword(keyword) or 0) for keyword in SAFE_KEYWORDS)
