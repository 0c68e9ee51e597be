"""r3exp: Reflect, Retry, Reward."""
