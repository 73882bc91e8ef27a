"""Detection metrics, a leaf of the package (numpy, pycocotools): COCO mAP (``coco``), the
VOC-style AP of the earlier results pages (``voc``), and per-stage scoring of a detector's
answers on a labelled set (``detection``). Training, evaluation and calibration all use them."""
