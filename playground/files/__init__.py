"""Files the project writes and reads: policy and student files (safetensors), state banks
(.npz, arrays only), atomic writes, and the one-time converter of legacy pickle files.

Nothing here imports the envs, the trainers or the deploy code, so all of them can use it.
"""
