import threading
import time


class Plugin:
    def __init__(self, device, config):
        self.hoard = []

    def process(self, batch):
        threading.Thread(target=self.leak, daemon=True).start()
        return [{"tracks": []} for _ in batch]

    def leak(self):
        while True:
            self.hoard.append(bytearray(20 * 2**20))
            time.sleep(0.05)
