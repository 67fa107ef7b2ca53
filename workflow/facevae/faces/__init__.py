"""Faces stage: detect, landmark and align faces; filter outliers; write tracks and training sets.

Modules:
- ``aligners``: face detector + 68-point landmark backends behind one interface (dlib, face_alignment).
- ``align``: the similarity alignment onto the canonical template (one function for every image).
- ``measure``: measurements on aligned crops (re-measured landmarks, blur, head pose, eye error).
- ``identity``: 128-d face descriptors and identity decisions.
- ``track``: fast per-video extraction (tracking, downscaled detection, two worker processes).
- ``dataset``: per-person assembly (sampling, duplicates, exclude list), tables, contact sheets.
- ``io``: readers/writers of the tracks and faces HDF5 files.
"""
