"""`gpu-stack doctor`: the day-2 diagnosis of a deployed stack (command.py collects, diagnosis.py decides, nvidia_smi.py parses)."""
