"""The parts of the RL stage that `rayda.stages.rl` strings together.

- `rows`: rollouts -> training rows (`PolicyRow`: tokens, loss mask, advantage, old/reference log-probs)
- `rewards`: final answers -> rewards (format penalty, judge errors excluded), step statistics
- `sync`: versioned weight sync learner -> rollout pool, verified by a log-prob probe
- `pools`: the rollout and judge actor pools as the driver sees them (restart + re-sync, retries)
- `report`: metrics.jsonl lines and Ray dashboard gauges
"""
