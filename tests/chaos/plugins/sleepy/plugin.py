import time


class Plugin:
    def __init__(self, device, config):
        pass

    def process(self, batch):
        time.sleep(0.6)
        return [{"tracks": [{"id": 1, "box": [0, 0, 10, 10], "score": 1.0, "label": "slept"}]} for _ in batch]
