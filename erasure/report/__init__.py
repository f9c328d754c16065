"""Signed proof-of-erasure reports: keys, the PDF, signing and verification.

reportlab and pyHanko are imported only inside these modules' functions."""
