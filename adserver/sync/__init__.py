"""What keeps a worker current: ad-changes refresher, blocked set, user profiles, served-ads publisher."""
