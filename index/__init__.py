"""The pure core of the ad platform: campaign model, targeting, the index, the auction, pacing and money.

Nothing in this package does I/O (a test enforces it): it takes plain values and returns plain values.
"""
