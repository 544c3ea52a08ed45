"""Retrieval quality on labelled questions.

``labels`` reads labelled query sets, ``metrics`` scores page rankings against them, and
``pipeline`` runs every ranking stage of the pipeline on the labelled questions and measures each.
"""
