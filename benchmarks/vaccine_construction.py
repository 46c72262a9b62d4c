"""Time VaccineMessaging-v0 construction for every (clusters, messages) setting of Table II.

Target: each setting builds in < 5 s (pool of 50,000 users, both k-means) on one laptop core.

    python benchmarks/vaccine_construction.py
"""

import time

from recsim_ft.envs.vaccine import VaccineMessagingEnv, load_builtin_embeddings

TABLE_II = [(25, 25), (25, 50), (25, 100), (50, 50), (50, 100), (100, 100)]

if __name__ == "__main__":
    load_builtin_embeddings()  # load the asset once, outside the timings
    for clusters, messages in TABLE_II:
        times = []
        for seed in range(3):
            start = time.perf_counter()
            VaccineMessagingEnv(clusters=clusters, messages=messages, seed=seed)
            times.append(time.perf_counter() - start)
        print(
            f"clusters={clusters:3d} messages={messages:3d}: max {max(times):.2f} s, "
            f"mean {sum(times) / len(times):.2f} s over {len(times)} seeds"
        )
