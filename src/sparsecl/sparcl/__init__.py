"""SparCL (Wang et al., NeurIPS 2022): task-aware dynamic masking, dynamic data removal, dynamic gradient masking."""
