import time

from mmf_rec.train_speed import TrainSpeed


def test_step_and_fetch_times_leave_out_warmup():
    speed = TrainSpeed(batch_size=100, warmup=2)

    def slow_loader():
        for i in range(6):
            time.sleep(0.002)
            yield i

    seen = []
    for batch in speed.batches(slow_loader()):
        speed.step_started()
        time.sleep(0.004)
        speed.step_done()
        seen.append(batch)
    summary = speed.summary()
    assert seen == list(range(6))
    assert summary["updates_timed"] == 4
    assert summary["step_ms_median"] >= 4.0
    assert summary["fetch_ms_median"] >= 2.0
    # the loop includes the fetches, the model number does not
    assert summary["loop_samples_per_s"] < summary["model_samples_per_s"]
    assert summary["model_samples_per_s"] == 100 / (summary["step_ms_median"] / 1e3)


def test_no_summary_for_a_run_shorter_than_the_warmup():
    speed = TrainSpeed(batch_size=8, warmup=5)
    for _ in speed.batches(range(3)):
        speed.step_started()
        speed.step_done()
    assert speed.summary() is None
