/*
 * IKCONFIG framing as in the kernel's kernel/configs.c: the gzipped config
 * (one gzip member, made with gzip -n -9 by gen.sh) between the ASCII
 * markers IKCFG_ST and IKCFG_ED, in .rodata.
 */
	.section .rodata, "a"
	.ascii "IKCFG_ST"
	.global kernel_config_data
kernel_config_data:
	.incbin "config.gz"
	.global kernel_config_data_end
kernel_config_data_end:
	.ascii "IKCFG_ED"
