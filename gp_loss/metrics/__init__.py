"""Task metrics, computed as the benchmarks of each task define them (COCO AP for detection)."""
