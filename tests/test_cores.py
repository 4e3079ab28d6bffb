"""The model's threads follow the cores other processes leave idle."""
import subprocess
import sys
import time

import pytest
import torch

from assistant.engine.cores import IdleCores, machine_busy
from assistant.engine.model_thread import ModelThread


class Machine:
    """A machine of `cores` cores whose clock, busy time and this process's own CPU time the test moves."""

    def __init__(self, cores: int) -> None:
        self.cores, self.now, self.busy, self.mine = cores, 0.0, 0.0, 0.0

    def run(self, seconds: float, elsewhere: float, mine: float = 0.0) -> None:
        """`seconds` pass with `elsewhere` cores busy in other processes and `mine` in this one."""
        self.now += seconds
        self.busy += seconds * (elsewhere + mine)
        self.mine += seconds * mine

    def idle_cores(self, most: int) -> IdleCores:
        return IdleCores(most, read=lambda: (self.busy, self.cores), own=lambda: self.mine, clock=lambda: self.now)


def test_threads_are_the_cores_other_processes_leave_idle_and_never_fewer_than_one():
    machine = Machine(cores=4)
    cores = machine.idle_cores(most=4)
    assert cores.threads() == 4                                  # one reading: nothing to compare yet
    machine.run(1.0, elsewhere=2.0, mine=1.5)                    # this process's own work is not "elsewhere"
    assert cores.threads() == 2
    machine.run(0.1, elsewhere=0.0)
    assert cores.threads() == 2                                  # too short a span: the last answer stands
    machine.run(1.0, elsewhere=0.1, mine=3.9)
    assert cores.threads() == 4                                  # a core a tenth busy elsewhere still counts
    machine.run(1.0, elsewhere=7.0)
    assert cores.threads() == 1
    two = machine.idle_cores(most=2)
    two.threads()
    machine.run(1.0, elsewhere=0.0)
    assert two.threads() == 2                                    # never more than it started with
    assert IdleCores(3, read=lambda: None).threads() == 3        # a machine that cannot say: as started


@pytest.mark.skipif(machine_busy() is None or machine_busy()[1] < 2, reason="needs /proc/stat and two cores")
def test_a_process_spinning_on_a_core_takes_a_thread_away():
    cores = IdleCores(machine_busy()[1])
    assert cores.threads() == cores.most
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(1.0)
        assert cores.threads() < cores.most
    finally:
        spinner.kill()
        spinner.wait()


def test_the_model_thread_takes_its_threads_before_each_piece_of_work():
    machine = Machine(cores=3)
    worker = ModelThread()
    worker.cores = machine.idle_cores(most=3)
    assert worker.run(torch.get_num_threads) == 3
    machine.run(1.0, elsewhere=2.0)
    assert worker.run(torch.get_num_threads) == 1
    machine.run(1.0, elsewhere=1.0)
    assert worker.run(torch.get_num_threads) == 2
