#!/usr/bin/env python3

import matplotlib.pyplot as plt
import numpy as np
convolve = __import__('5-convolve').convolve


if __name__ == '__main__':

    dataset = np.load('../../supervised_learning/data/animals_1.npz')
    images = dataset['data']
    print(images.shape)
    kernels = np.array([[[[0, 1, 1], [0, 1, 1], [0, 1, 1]], [[-1, -1, 0], [-1, -1, 0], [-1, -1, 0]], [[0, 1, 1], [0, 1, 1], [0, 1, 1]]],
                       [[[5, 0, 0], [5, 0, 0], [5, 0, 0]], [[-1, -1, 0], [-1, -1, 0], [-1, -1, 0]], [[5, 0, 0], [5, 0, 0], [5, 0, 0]]],
                       [[[-1, 1, -1], [-1, 1, -1], [-1, 1, -1]], [[-1, -1, 0], [-1, -1, 0], [-1, -1, 0]], [[-1, 1, -1], [-1, 1, -1], [-1, 1, -1]]]])

    images_conv = convolve(images, kernels, padding='valid')
    print(images_conv.shape)

    plt.imshow(images[0])
    plt.show()
    plt.imshow(images_conv[0, :, :, 0])
    plt.show()
    plt.imshow(images_conv[0, :, :, 1])
    plt.show()
    plt.imshow(images_conv[0, :, :, 2])
    plt.show()
