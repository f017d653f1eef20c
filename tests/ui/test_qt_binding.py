"""Guard against a Qt binding that corrupts Python's reference counts.

PySide6 6.12.0 decrements None's reference count on every call of a method that returns
nothing, when run on Python 3.11 (where None is not immortal yet). Painting makes thousands
of such calls, so the app aborted with "Fatal Python error: none_dealloc" after a few seconds
of live plots. This test fails fast on such a binding, before the app does.
"""

import sys

from PySide6.QtCore import QPointF
from PySide6.QtGui import QColor, QImage, QPainter, QPen


def test_void_calls_leave_the_refcount_of_none_alone(qapp):
    image = QImage(64, 64, QImage.Format.Format_ARGB32)
    painter = QPainter(image)
    pen, start, end = QPen(QColor("black")), QPointF(0, 0), QPointF(10, 10)
    before = sys.getrefcount(None)
    for _ in range(200):
        painter.setPen(pen)
        painter.drawLine(start, end)
    after = sys.getrefcount(None)
    painter.end()
    assert after >= before - 10, f"None lost {before - after} references in 400 Qt calls"
